"""The h5ad core on tiny synthetic CELLxGENE files: a slice read from an open file (as a stream is) equals
the slice read from the path, row windows return exactly the rows asked for, and concatenation joins the
genes as anndata's own concat does."""

from __future__ import annotations

import io

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from unit_helpers import sliced_tiny

from cellquery.files import h5ad
from cellquery.spec.criteria import Criterion


def slice_of(source, dataset_id, criteria, out):
    sliced_tiny(source, dataset_id, out, criteria, obs_columns=["cell_type", "donor_id"])
    return ad.read_h5ad(out)


def test_a_slice_from_an_open_file_equals_the_slice_from_its_path(tiny_h5ads, tmp_path):
    dataset_id, path = tiny_h5ads[0]
    obs = h5ad.read_frame(path, "obs")
    criteria = [Criterion("cell_type_ontology_term_id", "in", (obs["cell_type_ontology_term_id"].iloc[0],))]
    from_path = slice_of(path, dataset_id, criteria, tmp_path / "path.h5ad")
    from_file = slice_of(io.BytesIO(path.read_bytes()), dataset_id, criteria, tmp_path / "file.h5ad")
    assert 0 < from_path.n_obs < len(obs)
    pd.testing.assert_frame_equal(from_path.obs, from_file.obs)
    assert (from_path.X != from_file.X).nnz == 0


@pytest.mark.parametrize("pattern", ["contiguous", "scattered", "sparse gaps"])
def test_row_windows_return_exactly_the_rows_asked_for(tiny_h5ads, pattern):
    _, path = tiny_h5ads[0]
    whole = ad.read_h5ad(path).raw.X
    n = whole.shape[0]
    rows = {
        "contiguous": np.arange(50, 150),
        "scattered": np.sort(np.random.default_rng(1).choice(n, 60, replace=False)),
        "sparse gaps": np.array([0, 1, 2, 300, 301, n - 1]),  # gaps wider than ROW_GAP end a window
    }[pattern]
    for block_size in (7, h5ad.ROW_BLOCK):
        blocks = list(h5ad.row_blocks(path, rows, "raw/X", block=block_size))
        assert np.concatenate([r for r, _ in blocks]).tolist() == rows.tolist()
        for block_rows, block in blocks:
            assert (block != whole[block_rows]).nnz == 0


@pytest.mark.parametrize("join", ["inner", "outer"])
def test_concatenation_joins_genes_as_anndata_does(tiny_h5ads, tmp_path, join):
    slices = []
    for dataset_id, path in tiny_h5ads:
        slices.append(tmp_path / f"{dataset_id}.h5ad")
        slice_of(path, dataset_id, [Criterion("is_primary_data", "==", (True,))], slices[-1])
    obs = h5ad.concatenate(
        slices, join, tmp_path / "joined.h5ad", ["dataset_id", "observation_joinid", "cell_type"]
    )
    joined = ad.read_h5ad(tmp_path / "joined.h5ad")
    expected = ad.concat([ad.read_h5ad(s) for s in slices], join=join, fill_value=0)
    assert len(obs) == joined.n_obs == expected.n_obs
    assert list(joined.obs_names) == list(expected.obs_names)
    assert set(joined.var_names) == set(expected.var_names)
    assert (joined[:, expected.var_names].X != expected.X).nnz == 0
    assert list(joined.obs.columns) == ["dataset_id", "observation_joinid", "cell_type"]


def test_a_normalized_layer_follows_x_through_slicing_and_concatenation(tiny_h5ads, tmp_path):
    """Each cell's normalized values sum to 1 over the dataset's genes; a sample keeps its rows in every
    matrix; the h5ad keeps the provenance it is given."""
    slices = []
    for dataset_id, path in tiny_h5ads:
        slices.append(tmp_path / f"{dataset_id}.h5ad")
        sliced_tiny(path, dataset_id, slices[-1], layers=["normalized"])
        sliced = ad.read_h5ad(slices[-1])
        genes = (sliced.var["feature_biotype"] == "gene").to_numpy()
        sums = np.asarray(sliced.layers["normalized"][:, genes].sum(axis=1)).ravel()
        assert np.allclose(sums[sums > 0], 1.0, atol=1e-5) and (sliced.layers["normalized"] != 0).nnz
        assert ((sliced.layers["normalized"] != 0) != (sliced.X != 0)).nnz == 0

    def every_other(obs):
        return np.arange(len(obs)) % 2 == 0

    out = tmp_path / "joined.h5ad"
    columns = ["dataset_id", "observation_joinid", "cell_type"]
    h5ad.concatenate(
        slices, "outer", out, columns, keep=every_other, layers=["normalized"], uns={"cellquery": {"q": "x"}}
    )
    joined = ad.read_h5ad(out)
    expected = ad.concat([ad.read_h5ad(s) for s in slices], join="outer", fill_value=0)[::2]
    assert list(joined.obs_names) == list(expected.obs_names) and joined.uns["cellquery"]["q"] == "x"
    assert (joined[:, expected.var_names].layers["normalized"] != expected.layers["normalized"]).nnz == 0
    assert h5ad.stored_layers(out) == ["normalized"]
