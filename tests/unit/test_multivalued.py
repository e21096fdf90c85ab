"""Multi-valued labels (CELLxGENE schema 7: `disease_ontology_term_id` and
`self_reported_ethnicity_ontology_term_id` may join terms with ` || `; schema 5.x joined ethnicities with
`,`): a cell matches each of its terms, in
the pandas obs mask and in the SOMA value_filter alike, on a real h5ad and the SOMA store made from it; a
registered result is linked to each term."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
import tiledbsoma as soma
import tiledbsoma.io

from cellquery.files import h5ad
from cellquery.query.census_route import stored_values
from cellquery.query.registration import _names_by_id
from cellquery.spec.criteria import Criterion, obs_mask, value_filter

DISEASE, ETHNICITY = "disease_ontology_term_id", "self_reported_ethnicity_ontology_term_id"
NORMAL, COVID, DIABETES = "PATO:0000461", "MONDO:0100096", "MONDO:0005015"
TYPE_2, TYPE_1 = "MONDO:0005148", "MONDO:0005147"  # descendants of diabetes mellitus
SHORT, LONG = "MONDO:00001", "MONDO:000011"  # one a prefix of the other: no substring may match
# cell -> (disease, ethnicity)
CELLS = {
    "normal": (NORMAL, "HANCESTRO:0005"),
    "covid": (COVID, "HANCESTRO:0005 || HANCESTRO:0014"),
    "covid and diabetes": (f"{DIABETES} || {COVID}", "unknown"),
    "type 2 and covid": (f"{TYPE_2} || {COVID}", "HANCESTRO:0014"),
    "type 1": (TYPE_1, "HANCESTRO:0005"),
    "short": (SHORT, "unknown"),
    "long and diabetes": (f"{DIABETES} || {LONG}", "HANCESTRO:0014"),
    "schema 5 mixed": (NORMAL, "HANCESTRO:0014,HANCESTRO:0019"),
}
DIABETES_AND_DESCENDANTS = (DIABETES, TYPE_1, TYPE_2)  # as `descendants_of` resolves
CASES = {  # criteria -> the cells they select
    "in": ([Criterion(DISEASE, "in", (COVID,))], {"covid", "covid and diabetes", "type 2 and covid"}),
    "not in": (
        [Criterion(DISEASE, "not_in", (COVID,))],
        {"normal", "type 1", "short", "long and diabetes", "schema 5 mixed"},
    ),
    "in either": (
        [Criterion(DISEASE, "in", (NORMAL, DIABETES))],
        {"normal", "covid and diabetes", "long and diabetes", "schema 5 mixed"},
    ),
    "descendants": (
        [Criterion(DISEASE, "in", DIABETES_AND_DESCENDANTS)],
        {"covid and diabetes", "type 2 and covid", "type 1", "long and diabetes"},
    ),
    "not descendants": (
        [Criterion(DISEASE, "not_in", DIABETES_AND_DESCENDANTS)],
        {"normal", "covid", "short", "schema 5 mixed"},
    ),
    "prefix": ([Criterion(DISEASE, "in", (SHORT,))], {"short"}),
    "superstring": ([Criterion(DISEASE, "in", (LONG,))], {"long and diabetes"}),
    "not prefix": ([Criterion(DISEASE, "not_in", (SHORT,))], set(CELLS) - {"short"}),
    "ethnicity": (
        [Criterion(ETHNICITY, "in", ("HANCESTRO:0014",))],
        {"covid", "type 2 and covid", "long and diabetes", "schema 5 mixed"},
    ),
    "ethnicity joined by a comma": ([Criterion(ETHNICITY, "in", ("HANCESTRO:0019",))], {"schema 5 mixed"}),
    "not ethnicity joined by a comma": (
        [Criterion(ETHNICITY, "not_in", ("HANCESTRO:0019",))],
        set(CELLS) - {"schema 5 mixed"},
    ),
    "both columns": (
        [Criterion(DISEASE, "in", (COVID,)), Criterion(ETHNICITY, "not_in", ("HANCESTRO:0005",))],
        {"covid and diabetes", "type 2 and covid"},
    ),
    "no stored value in": ([Criterion(DISEASE, "in", ("MONDO:0004992",))], set()),
    "no stored value not in": ([Criterion(DISEASE, "not_in", ("MONDO:0004992",))], set(CELLS)),
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A small h5ad whose cells hold several terms (each cell repeated), and a SOMA store made from it."""
    folder = tmp_path_factory.mktemp("multivalued")
    names = [f"{cell}/{copy}" for copy in range(3) for cell in CELLS]
    obs = pd.DataFrame(
        {
            DISEASE: pd.Categorical([CELLS[n.split("/")[0]][0] for n in names]),
            ETHNICITY: pd.Categorical([CELLS[n.split("/")[0]][1] for n in names]),
        },
        index=names,
    )
    path = folder / "source.h5ad"
    counts = sp.csr_matrix(np.ones((len(names), 2), dtype=np.float32))
    ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=["g1", "g2"])).write_h5ad(path)
    store = str(folder / "soma")
    tiledbsoma.io.from_h5ad(store, str(path), "RNA")
    return h5ad.read_frame(path, "obs"), store


def cells_of(obs: pd.DataFrame, mask: np.ndarray) -> set[str]:
    return {name.split("/")[0] for name in obs.index[mask]}


@pytest.mark.parametrize("case", list(CASES))
def test_the_obs_mask_matches_each_term_of_a_cell(source, case):
    obs, _ = source
    criteria, expected = CASES[case]
    assert cells_of(obs, obs_mask(obs, criteria)) == expected


@pytest.mark.parametrize("case", list(CASES))
def test_the_soma_filter_selects_the_rows_the_obs_mask_selects(source, case):
    obs, store = source
    criteria, _ = CASES[case]
    with soma.Experiment.open(store) as experiment:
        stored = stored_values(experiment.obs, criteria)
        table = experiment.obs.read(
            column_names=["obs_id"], value_filter=value_filter(criteria, None, stored)
        )
        selected = table.concat()["obs_id"].to_pylist()
    assert sorted(selected) == sorted(obs.index[obs_mask(obs, criteria)])


def test_stored_values_are_the_enumeration_or_the_distinct_values(source, tmp_path):
    """The store made from the h5ad keeps categoricals as enumerations; a plain text column is read whole."""
    obs, store = source
    criteria = [Criterion(DISEASE, "in", (COVID,)), Criterion("tissue", "in", ("lung",))]
    with soma.Experiment.open(store) as experiment:
        assert pa.types.is_dictionary(experiment.obs.schema.field(DISEASE).type)
        enumerated = stored_values(experiment.obs, criteria)
    table = pa.table({"soma_joinid": np.arange(len(obs)), DISEASE: obs[DISEASE].astype(str).to_numpy()})
    uri = str(tmp_path / "plain")
    with soma.DataFrame.create(uri, schema=table.schema, domain=[(0, len(obs) - 1)]) as frame:
        frame.write(table)
    with soma.DataFrame.open(uri) as frame:
        plain = stored_values(frame, criteria)
    assert list(enumerated) == list(plain) == [DISEASE]  # only the multi-valued columns named
    assert sorted(enumerated[DISEASE]) == plain[DISEASE] == sorted({value for value, _ in CELLS.values()})


def test_single_valued_columns_still_match_exactly():
    obs = pd.DataFrame({"cell_type": pd.Categorical(["T cell || B cell", "T cell"])})
    assert obs_mask(obs, [Criterion("cell_type", "in", ("T cell",))]).tolist() == [False, True]
    assert value_filter([Criterion("cell_type", "in", ("T cell",))]) == "(cell_type in ['T cell'])"


def test_a_multi_valued_criterion_needs_the_stored_values():
    with pytest.raises(ValueError, match=DISEASE):
        value_filter([Criterion(DISEASE, "in", (COVID,))])


def test_a_result_is_linked_to_each_term_its_cells_carry():
    obs = pd.DataFrame(
        {
            DISEASE: pd.Categorical([f"{DIABETES} || {COVID}", COVID, NORMAL]),
            "disease": pd.Categorical(["diabetes mellitus || COVID-19", "COVID-19", "normal"]),
        }
    )
    expected = {DIABETES: "diabetes mellitus", COVID: "COVID-19", NORMAL: "normal"}
    assert _names_by_id(obs, DISEASE, "disease") == expected
    assert _names_by_id(obs[[DISEASE]], DISEASE, "disease") == {term: term for term in expected}
