"""The store builder (`cellquery.store`): a store of two h5ads passes its validation pass and reads through
`cellxgene_census`; a store whose own tables disagree with its cells is named, one line per problem."""

from __future__ import annotations

import shutil

import cellxgene_census
import pyarrow as pa
import pytest
import tiledbsoma as soma

from cellquery.cellxgene.release import release_named
from cellquery.demo.catalog import V2
from cellquery.errors import ValidationFailed
from cellquery.store.build import build_census
from cellquery.store.sources import SourceDataset
from cellquery.store.validate import store_problems


@pytest.fixture(scope="module")
def store(tiny_h5ads, tmp_path_factory):
    sources = [
        SourceDataset(dataset_id=d, dataset_version_id=f"{d}-v1", title=d, path=path)
        for d, path in tiny_h5ads
    ]
    uri = tmp_path_factory.mktemp("store") / "soma"
    return uri, build_census(sources, uri, V2, release_named(V2))


def test_a_built_store_passes_its_validation_and_reads_as_a_census(store):
    uri, summary = store
    assert store_problems(str(uri), {"homo_sapiens": summary["total_cell_count"]}) == []
    with cellxgene_census.open_soma(uri=str(uri)) as census:
        adata = cellxgene_census.get_anndata(census, "Homo sapiens", obs_column_names=["dataset_id"])
    assert adata.n_obs == summary["total_cell_count"] > 0
    assert adata.obs["dataset_id"].nunique() == 2


def test_cells_other_than_the_inclusion_rules_chose_are_named(store):
    uri, summary = store
    chose = summary["total_cell_count"] + 1
    held = summary["total_cell_count"]
    assert store_problems(str(uri), {"homo_sapiens": chose}) == [
        f"experiment homo_sapiens: {held} cells, where the inclusion rules chose {chose}"
    ]


def test_a_summary_disagreeing_with_the_cells_is_named(store, tmp_path):
    built, summary = store
    uri = shutil.copytree(built, tmp_path / "soma")
    row = {"soma_joinid": pa.array([3], pa.int64()), "label": ["total_cell_count"], "value": ["1"]}
    with soma.DataFrame.open(str(uri / "census_info" / "summary"), "w") as table:
        table.write(pa.table(row))
    problems = store_problems(str(uri), {"homo_sapiens": summary["total_cell_count"]})
    assert problems == [f"census_info/summary states 1 cells, the store holds {summary['total_cell_count']}"]


def test_a_store_failing_its_validation_is_never_in_place(tiny_h5ads, tmp_path, monkeypatch):
    """The pass runs on the staged store: a failure raises, one line per problem, and leaves no store."""
    from cellquery.store import build

    monkeypatch.setattr(build, "store_problems", lambda uri, chosen: ["experiment homo_sapiens: a problem"])
    sources = [SourceDataset(dataset_id=d, dataset_version_id=d, title=d, path=p) for d, p in tiny_h5ads[:1]]
    with pytest.raises(ValidationFailed, match="experiment homo_sapiens: a problem"):
        build_census(sources, tmp_path / "soma", V2, release_named(V2))
    assert not list(tmp_path.iterdir())
