"""One spec, three backends: the pandas mask and the SOMA filter select the same cells; the artifact query
never drops an artifact that holds matching cells. Property-based, over the demo's real data."""

from __future__ import annotations

import pytest
import tiledbsoma as soma
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellquery.cellxgene.release import releases
from cellquery.demo import catalog
from cellquery.demo.catalog import artifact_dataset_id
from cellquery.files import h5ad
from cellquery.ingest.registry import COLLECTION_KEY
from cellquery.query.artifacts import artifact_query
from cellquery.query.census_route import obs_filter
from cellquery.query.slicing import with_cell_stats
from cellquery.spec.criteria import Criterion, obs_mask
from cellquery.spec.query_spec import MULTI_VALUED_COLUMNS, load_spec, terms

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
CATEGORICAL = [
    "cell_type_ontology_term_id",
    "tissue_ontology_term_id",
    "assay_ontology_term_id",
    "disease_ontology_term_id",
    "sex_ontology_term_id",
    "development_stage_ontology_term_id",
    "suspension_type",
    "donor_id",
]


@pytest.fixture(scope="module")
def collection(ln):
    return ln.Collection.get(key=COLLECTION_KEY, version_tag=catalog.V2)


@pytest.fixture(scope="module")
def human(ln, collection):
    """Each human dataset's obs (with the Census per-cell statistics), keyed by dataset id."""
    frames = {}
    for artifact in collection.artifacts.all():
        path = artifact.cache()
        if h5ad.read_uns(path)["organism_ontology_term_id"] != catalog.HUMAN:
            continue
        obs = with_cell_stats(path, h5ad.read_frame(path, "obs"), catalog.HUMAN)
        frames[artifact_dataset_id(artifact)] = (artifact.uid, obs)
    return frames


@pytest.fixture(scope="module")
def census_obs(ln):
    store = ln.Artifact.get(key=f"cell-census/{catalog.V2}/soma")
    handle = soma.open(str(store.path))
    yield handle["census_data"]["homo_sapiens"].obs
    handle.close()


def criteria_strategy(human):
    values = {
        c: sorted({term for _, obs in human.values() for term in named_values(c, obs[c])})
        for c in CATEGORICAL
    }
    categorical = st.sampled_from(CATEGORICAL).flatmap(
        lambda column: st.tuples(
            st.just(column),
            st.sampled_from(["in", "not_in"]),
            st.lists(st.sampled_from(values[column]), min_size=1, max_size=3, unique=True),
        )
    )
    primary = st.tuples(
        st.just("is_primary_data"), st.just("=="), st.lists(st.booleans(), min_size=1, max_size=1)
    )
    stats = st.tuples(
        st.sampled_from(["raw_sum", "nnz"]),
        st.sampled_from([">", ">=", "<", "<="]),
        st.lists(st.integers(100, 3000), min_size=1, max_size=1),
    )
    one = st.one_of(categorical, categorical, primary, stats).map(
        lambda t: Criterion(t[0], t[1], tuple(t[2]))
    )
    return st.lists(one, min_size=1, max_size=3)


def named_values(column: str, values) -> set[str]:
    """A column's values as a spec names them: each term of a multi-valued column's values."""
    distinct = {str(v) for v in values}
    return {t for v in distinct for t in terms(v)} if column in MULTI_VALUED_COLUMNS else distinct


def pandas_route(human, criteria) -> set[str]:
    keys = set()
    for dataset_id, (_, obs) in human.items():
        mask = releases()[-1].included_cells(obs, catalog.HUMAN) & obs_mask(obs, criteria)
        keys |= {f"{dataset_id}:{j}" for j in obs["observation_joinid"][mask]}
    return keys


def soma_route(census_obs, human, criteria) -> set[str]:
    table = census_obs.read(
        value_filter=obs_filter(census_obs, criteria, sorted(human)),
        column_names=["dataset_id", "observation_joinid"],
    ).concat()
    frame = table.to_pandas()
    return set(frame["dataset_id"].astype(str) + ":" + frame["observation_joinid"].astype(str))


def test_pandas_mask_and_soma_filter_select_the_same_cells(human, census_obs):
    @SETTINGS
    @given(criteria=criteria_strategy(human))
    def check(criteria):
        assert pandas_route(human, criteria) == soma_route(census_obs, human, criteria)

    check()


def test_no_value_can_change_the_soma_filter(human, census_obs):
    donors = sorted({str(d) for _, obs in human.values() for d in obs["donor_id"]})

    @SETTINGS
    @given(
        hostile=st.text(min_size=1, max_size=20).filter(lambda v: "\x00" not in v)
        | st.sampled_from(["' or donor_id != '", '" or True or "', "x') or ('1' == '1", "\\'"]),
        real=st.sampled_from(donors),
        op=st.sampled_from(["in", "not_in"]),
    )
    def check(hostile, real, op):
        criteria = [Criterion("donor_id", op, (hostile, real))]
        assert pandas_route(human, criteria) == soma_route(census_obs, human, criteria)

    check()


def test_artifact_query_never_drops_an_artifact_with_matching_cells(
    source_registry, human, collection, tmp_path_factory
):
    spec_path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "property", "organism": "Homo sapiens"}))
    spec = load_spec(spec_path)
    # artifacts whose curation failed carry no organism link: kept for the census store to decide
    every_human = {uid for uid, _ in human.values()} | uncurated(collection)
    assert {a.uid for a in artifact_query(source_registry, spec, collection, [])} == every_human

    @SETTINGS
    @given(criteria=criteria_strategy(human))
    def check(criteria):
        found = {a.uid for a in artifact_query(source_registry, spec, collection, criteria)}
        holding = {uid for uid, obs in human.values() if obs_mask(obs, criteria).any()}
        assert holding <= found <= every_human

    check()


def test_prefilter_actually_narrows(source_registry, human, collection, tmp_path_factory):
    """Not a vacuous superset: a label criterion leaves out artifacts linked to other labels only (those
    with no label links, whose curation failed, are kept)."""
    spec_path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "narrow", "organism": "Homo sapiens"}))
    criteria = [Criterion("cell_type_ontology_term_id", "in", (catalog.MICROGLIA,))]
    found = {a.uid for a in artifact_query(source_registry, load_spec(spec_path), collection, criteria)}
    holding = {
        uid for uid, obs in human.values() if (obs["cell_type_ontology_term_id"] == catalog.MICROGLIA).any()
    }
    assert found == holding | uncurated(collection) and 0 < len(holding) < len(found) < len(human)


def uncurated(collection) -> set[str]:
    """The collection's artifacts with no label links (their curation failed)."""
    return set(collection.artifacts.filter(organisms__isnull=True).values_list("uid", flat=True))
