"""The join key, checked where each route reads obs: an h5ad or a census store without `observation_joinid`,
or with a value repeated among the selected cells, stops its slice with one line naming the dataset (or the
store) and writes nothing; `var.feature_type` missing from either is taken from the gene references; the
census route's rows found by search, when a block's cells lie too far apart for a lookup table, are the same.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import tiledbsoma as soma
import tiledbsoma.io
from scipy import sparse
from unit_helpers import sliced_tiny

from cellquery.cellxgene.release import releases
from cellquery.errors import JoinKeyError
from cellquery.query import census_route
from cellquery.query.census_route import cells_per_dataset, census_slice, selected_positions
from cellquery.spec.criteria import Criterion
from cellquery.spec.genes import gene_table

ORGANISM = "NCBITaxon:9606"
PRIMARY = [Criterion("is_primary_data", "==", (True,))]


def label(dataset_id: str) -> str:
    """How the shard job names a tiny dataset (`joinkey.dataset_label` of its manifest row)."""
    return f'dataset {dataset_id} ("Tiny kidney", cell-census/2025-01-30/h5ads/{dataset_id}.h5ad)'


def rewritten(path, folder, change) -> ad.AnnData:
    """A copy of a tiny h5ad, as `change` leaves it, at `folder/source.h5ad`."""
    adata = change(ad.read_h5ad(path))
    adata.write_h5ad(folder / "source.h5ad")
    return adata


def sliced(dataset, source, out, criteria=PRIMARY) -> dict:
    dataset_id, _ = dataset
    return sliced_tiny(source, dataset_id, out, criteria, label=label(dataset_id))


def without_joinid(adata):
    del adata.obs["observation_joinid"]
    return adata


def joinid_repeated(rows: list[int]):
    """Each of `rows` after the first takes the first's join key."""

    def change(adata):
        joinids = adata.obs["observation_joinid"].astype(str).to_numpy()
        joinids[rows[1:]] = joinids[rows[0]]
        adata.obs["observation_joinid"] = joinids
        return adata

    return change


def test_an_h5ad_without_the_join_key_stops_its_slice_with_one_line(tiny_h5ads, tmp_path):
    dataset_id, path = tiny_h5ads[0]
    rewritten(path, tmp_path, without_joinid)
    with pytest.raises(JoinKeyError) as error:
        sliced(tiny_h5ads[0], tmp_path / "source.h5ad", tmp_path / "slice.h5ad")
    assert str(error.value) == (
        f"{label(dataset_id)}: obs has no observation_joinid column, the key the h5ad and "
        "census routes are joined on (Census releases before 1.3 lack it); choose a later release "
        "(source.version)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.h5ad"]


def test_a_join_key_repeated_among_selected_cells_stops_the_slice_naming_the_dataset(tiny_h5ads, tmp_path):
    dataset_id, path = tiny_h5ads[0]
    adata = rewritten(path, tmp_path, joinid_repeated([0, 1, 2]))
    with pytest.raises(JoinKeyError) as error:
        sliced(tiny_h5ads[0], tmp_path / "source.h5ad", tmp_path / "slice.h5ad")
    repeated = adata.obs["observation_joinid"].iloc[0]
    assert str(error.value) == (
        f"{label(dataset_id)}: in the h5ad route, observation_joinid repeats: 1 value held by 3 of its "
        f"{adata.n_obs} cells, e.g. [{repeated!r}]; the routes are joined on it, one value per cell"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.h5ad"]  # no slice, no temporary


def test_a_join_key_repeated_outside_the_selection_leaves_the_slice_alone(tiny_h5ads, tmp_path):
    _, path = tiny_h5ads[0]
    adata = ad.read_h5ad(path)
    cell_types = adata.obs["cell_type"].astype(str)
    chosen, other = cell_types.iloc[0], np.flatnonzero(cell_types != cell_types.iloc[0])
    rewritten(path, tmp_path, joinid_repeated(list(other[:2])))
    criteria = [Criterion("cell_type", "in", (chosen,))]
    counts = sliced(tiny_h5ads[0], tmp_path / "source.h5ad", tmp_path / "slice.h5ad", criteria)
    assert counts["cells"] == (cell_types == chosen).sum() > 0


def without_feature_type(adata):
    """Var and raw var without `feature_type`, as h5ads of older schemas."""
    raw = ad.AnnData(X=adata.raw.X, obs=adata.obs[[]], var=adata.raw.var.drop(columns="feature_type"))
    adata.var = adata.var.drop(columns="feature_type")
    adata.raw = raw
    return adata


def test_an_h5ad_without_feature_type_slices_with_the_references(tiny_h5ads, tmp_path):
    _, path = tiny_h5ads[0]
    rewritten(path, tmp_path, without_feature_type)
    sliced(tiny_h5ads[0], tmp_path / "source.h5ad", tmp_path / "slice.h5ad")
    var = ad.read_h5ad(tmp_path / "slice.h5ad").var
    expected = ad.read_h5ad(path).raw.var["feature_type"].astype(str)
    assert (var["feature_type"].astype(str) == expected.loc[var.index]).all()


def tiny_store(root, adata: ad.AnnData) -> dict:
    """A census store at `root` holding `adata` as its human experiment (tiledbsoma's own ingestion: no
    census_info), as a resolved query names it."""
    soma.Collection.create(str(root)).close()
    with soma.Collection.open(str(root), "w") as census:
        census.add_new_collection("census_data").close()
    uri = tiledbsoma.io.from_anndata(
        str(root / "census_data" / "homo_sapiens"), adata, "RNA", var_id_name="feature_id", X_layer_name="raw"
    )
    with soma.Collection.open(str(root / "census_data"), "w") as census_data:
        census_data.set("homo_sapiens", soma.Experiment.open(uri))
    return {"key": "cell-census/2023-05-15/soma", "path": str(root), "release": releases()[-1].identity}


def census_cells(dataset, change=None) -> ad.AnnData:
    """The tiny dataset's cells with their raw counts and the census' key columns, as `change` leaves them."""
    dataset_id, path = dataset
    adata = ad.read_h5ad(path)
    cells = ad.AnnData(X=adata.raw.X, obs=adata.obs.copy(), var=adata.raw.var.copy())
    cells.obs["dataset_id"] = dataset_id
    return change(cells) if change else cells


def test_a_census_store_without_the_join_key_is_refused_naming_it(tiny_h5ads, tmp_path):
    store = tiny_store(tmp_path / "soma", census_cells(tiny_h5ads[0], without_joinid))
    with pytest.raises(JoinKeyError) as error:
        cells_per_dataset(store, PRIMARY, ORGANISM, [tiny_h5ads[0][0]])
    assert str(error.value).startswith(
        "census store cell-census/2023-05-15/soma: obs has no observation_joinid column"
    )


def census_sliced(store: dict, dataset, out) -> dict:
    dataset_id = dataset[0]
    return census_slice(
        store,
        PRIMARY,
        organism=ORGANISM,
        dataset_ids=[dataset_id],
        obs_columns=["cell_type"],
        gene_ids=None,
        out=out,
        labels={dataset_id: label(dataset_id)},
    )


def test_a_join_key_repeated_in_the_census_stops_its_slice_naming_the_dataset(tiny_h5ads, tmp_path):
    dataset_id = tiny_h5ads[0][0]
    cells = census_cells(tiny_h5ads[0], joinid_repeated([0, 1]))
    store = tiny_store(tmp_path / "soma", cells)
    with pytest.raises(JoinKeyError) as error:
        census_sliced(store, tiny_h5ads[0], tmp_path / "census.h5ad")
    assert str(error.value).startswith(
        f"{label(dataset_id)}: in the census route, observation_joinid repeats: 1 value "
        f"held by 2 of its {cells.obs['is_primary_data'].sum()} cells"
    )
    assert not (tmp_path / "census.h5ad").exists()


def test_a_census_store_without_feature_type_slices_with_the_references(tiny_h5ads, tmp_path):
    cells = census_cells(tiny_h5ads[0])
    cells.var = cells.var.drop(columns="feature_type")
    store = tiny_store(tmp_path / "soma", cells)
    census_sliced(store, tiny_h5ads[0], tmp_path / "census.h5ad")
    var = ad.read_h5ad(tmp_path / "census.h5ad").var
    references = pd.concat([gene_table(ORGANISM), gene_table("NCBITaxon:32630")])["feature_type"]
    assert len(var) and (var["feature_type"].astype(str) == references.loc[var.index]).all()


def test_a_block_of_cells_too_far_apart_for_a_lookup_is_read_the_same(tiny_h5ads, tmp_path, monkeypatch):
    store = tiny_store(tmp_path / "soma", census_cells(tiny_h5ads[0]))
    census_sliced(store, tiny_h5ads[0], tmp_path / "looked-up.h5ad")
    monkeypatch.setattr(census_route, "LOOKUP_SPAN", 1)  # every block of two cells or more is searched
    census_sliced(store, tiny_h5ads[0], tmp_path / "searched.h5ad")
    looked_up, searched = (ad.read_h5ad(tmp_path / f"{way}.h5ad") for way in ("looked-up", "searched"))
    assert looked_up.n_obs > 2 and list(searched.obs_names) == list(looked_up.obs_names)
    assert sparse.csr_matrix(searched.X - looked_up.X).nnz == 0 and looked_up.X.nnz > 0


def test_cells_read_in_many_blocks_ahead_of_the_writer_are_the_same(tiny_h5ads, tmp_path, monkeypatch):
    store = tiny_store(tmp_path / "soma", census_cells(tiny_h5ads[0]))
    census_sliced(store, tiny_h5ads[0], tmp_path / "one-block.h5ad")
    monkeypatch.setattr(census_route, "ROW_BLOCK", 3)  # blocks of 3 cells or more, read one ahead
    census_sliced(store, tiny_h5ads[0], tmp_path / "blocks.h5ad")
    whole, blocks = (ad.read_h5ad(tmp_path / f"{way}.h5ad") for way in ("one-block", "blocks"))
    assert whole.n_obs > 6 and list(blocks.obs_names) == list(whole.obs_names)
    assert sparse.csr_matrix(blocks.X - whole.X).nnz == 0 and whole.X.nnz > 0


def test_blocks_begin_where_a_row_of_tiles_begins_and_hold_every_cell_once(monkeypatch):
    monkeypatch.setattr(census_route, "ROW_BLOCK", 3)
    cells = np.array([0, 1, 2, 9, 10, 11, 12, 13, 30, 31, 45, 80])  # bands 0 0 0 0 1 1 1 1 3 3 4 8
    spans = census_route._block_spans(cells, band=10)
    assert spans == [(0, 4), (4, 8), (8, 11), (11, 12)]  # band 0 whole; bands 3 and 4 together
    assert census_route._block_spans(cells[:0], band=10) == []


def test_selected_cells_lie_where_the_census_keeps_them_in_each_file(tiny_h5ads, tmp_path):
    """The plan's positions: each selected cell's row in its h5ad over the file's cells (the census keeps a
    dataset's cells in file order), for every dataset asked and for one of the store's datasets."""
    cells = [census_cells(dataset) for dataset in tiny_h5ads]
    store = tiny_store(tmp_path / "soma", ad.concat(cells, merge="same"))
    chosen = str(cells[0].obs["cell_type"].iloc[0])
    criteria = [Criterion("cell_type", "in", (chosen,))]
    expected = {
        dataset_id: np.flatnonzero(adata.obs["cell_type"].astype(str) == chosen) / adata.n_obs
        for (dataset_id, _), adata in zip(tiny_h5ads, cells, strict=True)
    }
    everything = selected_positions(store, criteria, ORGANISM, list(expected))
    assert all(np.allclose(everything[d], expected[d]) for d in expected) and len(
        everything[tiny_h5ads[0][0]]
    )
    second = tiny_h5ads[1][0]
    assert np.allclose(selected_positions(store, criteria, ORGANISM, [second])[second], expected[second])
