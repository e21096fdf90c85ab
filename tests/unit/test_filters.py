"""One criterion, two cell backends: the pandas obs mask and the SOMA value_filter select the same cells, on
a tiny obs written to a real TileDB-SOMA DataFrame (quotes and negations included)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tiledbsoma as soma

from cellquery.spec.criteria import Criterion, comparisons, obs_mask, value_filter

DONORS = ["d-1", "O'Brien", 'say "hi"', "d-4"]
CASES = {
    "in": [Criterion("cell_type", "in", ("T cell", "B cell"))],
    "not in": [Criterion("cell_type", "not_in", ("T cell",))],
    "equal": [Criterion("tissue", "==", ("kidney",))],
    "boolean": [Criterion("is_primary_data", "==", (True,))],
    "comparison": [Criterion("nnz", ">=", (300,))],
    "quotes": [Criterion("donor_id", "in", ("O'Brien", 'say "hi"'))],
    "both booleans": [
        Criterion("is_primary_data", "in", (True, False)),  # the engine has no `in` for booleans
        Criterion("tissue", "==", ("kidney",)),
    ],
    "numbers in": [Criterion("nnz", "in", tuple(range(100, 300)))],
    "negative numbers in": [Criterion("nnz", "in", (-1, *range(100, 300)))],
    "fractional bounds on counts": comparisons("nnz", {"gt": 300.5, "le": 600.5}),
    "fractional lower bound on counts": comparisons("nnz", {"ge": 299.5, "lt": 450.2}),
    "several": [
        Criterion("tissue", "==", ("blood",)),
        Criterion("nnz", "<", (500,)),
        Criterion("donor_id", "not_in", ("d-4",)),
    ],
}


@pytest.fixture(scope="module")
def obs_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 500
    obs = pd.DataFrame(
        {
            "soma_joinid": np.arange(n, dtype=np.int64),
            "dataset_id": rng.choice(["ds-a", "ds-b"], n),
            "cell_type": rng.choice(["T cell", "B cell", "monocyte"], n),
            "tissue": rng.choice(["kidney", "blood"], n),
            "donor_id": rng.choice(DONORS, n),
            "is_primary_data": rng.random(n) < 0.8,
            "nnz": rng.integers(100, 900, n).astype(np.int64),
        }
    )
    uri = str(tmp_path_factory.mktemp("soma") / "obs")
    table = pa.Table.from_pandas(obs, preserve_index=False)
    with soma.DataFrame.create(
        uri, schema=table.schema, index_column_names=["soma_joinid"], domain=[(0, n - 1)]
    ) as frame:
        frame.write(table)
    return obs, uri


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("datasets", [None, ["ds-a"]])
def test_the_obs_mask_and_the_soma_filter_select_the_same_cells(obs_store, case, datasets):
    obs, uri = obs_store
    criteria = CASES[case]
    expected = obs.loc[obs_mask(obs, criteria), "soma_joinid"]
    if datasets:
        expected = expected[obs.loc[expected.index, "dataset_id"].isin(datasets)]
    with soma.DataFrame.open(uri) as frame:
        selected = frame.read(column_names=["soma_joinid"], value_filter=value_filter(criteria, datasets))
        selected = np.sort(selected.concat()["soma_joinid"].to_numpy())
    assert 0 < len(selected) < len(obs)
    assert selected.tolist() == sorted(expected.tolist())


def test_no_dataset_selects_no_cell(obs_store):
    _, uri = obs_store
    with soma.DataFrame.open(uri) as frame:
        assert len(frame.read(value_filter=value_filter([], [])).concat()) == 0
