"""Route comparison on tiny synthetic results: identical routes pass; a changed count, a missing cell or a
changed obs value fails with a line naming it; cells only one route holds are named per dataset by their
join keys, and a repeated join key stops the comparison naming the dataset. A sampled validation catches a
changed total in any cell, and a change that keeps the totals only in the cells it compares."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from unit_helpers import sliced_tiny

from cellquery.cellxgene.inclusion import CellTotals, included_genes
from cellquery.errors import JoinKeyError
from cellquery.query.assemble import slice_totals
from cellquery.query.census_route import READ_KEY
from cellquery.query.sampling import compared_rows
from cellquery.query.validate import compare_routes, describe_failure
from cellquery.spec.criteria import Criterion

ORGANISM = "NCBITaxon:9606"


@pytest.fixture(scope="module")
def result(tiny_h5ads, tmp_path_factory):
    """One dataset's slice as a result, and its manifest row."""
    dataset_id, path = tiny_h5ads[0]
    out = tmp_path_factory.mktemp("routes") / "result.h5ad"
    sliced_tiny(path, dataset_id, out, [Criterion("is_primary_data", "==", (True,))])
    manifest = pd.DataFrame(
        [{"dataset_id": dataset_id, "uid": "uid-1", "key": f"cellxgene/{dataset_id}.h5ad", "title": "Tiny"}]
    )
    return out, manifest


def census_like(result_path, tmp_path, change=None):
    adata = ad.read_h5ad(result_path)
    if change:
        adata = change(adata)
    path = tmp_path / "census.h5ad"
    adata.write_h5ad(path)
    return path


def compared(result, census_path):
    path, manifest = result
    cells = ad.read_h5ad(path).n_obs
    return compare_routes(path, census_path, ORGANISM, manifest, np.ones(cells, dtype=bool))


def test_identical_routes_pass(result, tmp_path):
    report = compared(result, census_like(result[0], tmp_path))
    assert report["status"] == "passed" and report["totals"]["matched_cells"] > 0


def one_count_more(adata):
    counts = adata.X.copy()
    counts.data[0] += 1  # the first stored count: one cell differs
    adata.X = counts
    return adata


def first_dropped(adata):
    return adata[1:].copy()


def cell_type_renamed(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.rename_categories(lambda c: f"{c}!")
    return adata


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (one_count_more, "raw counts: 1 cells"),
        (first_dropped, "missing from census: 1 cells"),
        (cell_type_renamed, "obs cell_type"),
    ],
)
def test_a_difference_fails_with_a_line_naming_it(result, tmp_path, change, line):
    report = compared(result, census_like(result[0], tmp_path, change))
    assert report["status"] == "failed" and line in describe_failure(report)


def joinids_rewritten(adata):
    """The census holding the first two cells under other join keys (cellxgene-census#1385)."""
    joinids = adata.obs["observation_joinid"].astype(str).to_numpy()
    joinids[:2] = ["rewritten-0", "rewritten-1"]
    adata.obs["observation_joinid"] = joinids
    adata.obs_names = adata.obs["dataset_id"].astype(str) + ":" + adata.obs["observation_joinid"]
    return adata


def test_cells_only_one_route_holds_are_named_per_dataset_by_their_join_keys(result, tmp_path):
    report = compared(result, census_like(result[0], tmp_path, joinids_rewritten))
    (dataset_id,) = result[1]["dataset_id"]
    ours = sorted(ad.read_h5ad(result[0]).obs["observation_joinid"].astype(str)[:2])
    label = f'dataset {dataset_id} ("Tiny", cellxgene/{dataset_id}.h5ad)'
    keys = report["diff"]["join_keys"][dataset_id]
    assert keys["only_in_h5ad"]["cells"] == keys["only_in_census"]["cells"] == 2
    assert (
        f"  {label}: observation_joinid only in the h5ad route: 2, e.g. {ours}; "
        "only in the census route: 2, e.g. ['rewritten-0', 'rewritten-1']"
    ) in describe_failure(report).splitlines()


def first_joinid_repeated(adata):
    joinids = adata.obs["observation_joinid"].astype(str).to_numpy()
    joinids[1] = joinids[0]
    adata.obs["observation_joinid"] = joinids
    return adata


def test_a_join_key_repeated_in_one_route_stops_the_comparison_naming_the_dataset(result, tmp_path):
    census = census_like(result[0], tmp_path, first_joinid_repeated)
    repeated = ad.read_h5ad(census).obs["observation_joinid"].iloc[0]
    with pytest.raises(JoinKeyError) as error:
        compared(result, census)
    (dataset_id,) = result[1]["dataset_id"]
    assert str(error.value) == (
        f'dataset {dataset_id} ("Tiny", cellxgene/{dataset_id}.h5ad): in the census route, '
        f"observation_joinid repeats: 1 value held by 2 of its {ad.read_h5ad(census).n_obs} cells, "
        f"e.g. [{repeated!r}]; the routes are joined on it, one value per cell"
    )


SAMPLED = {"mode": "sampled", "fraction": 0.3}


BAND = 4  # cells per band of the tiny census route: several bands, some compared


def compared_cells(n_cells: int) -> np.ndarray:
    """The cells whose counts the census route reads in a sampled validation: whole bands of its rows."""
    return compared_rows(np.arange(n_cells), BAND, SAMPLED)


def cells_by_draw(result_path) -> tuple[int, int]:
    """The first cell a sampled validation compares value by value, and the first it does not, among the
    cells whose counts can move between genes (two or more stored, one above 1)."""
    adata = ad.read_h5ad(result_path)
    counts = sp.csr_matrix(adata.X)
    movable = [len(row.data) >= 2 and row.data.max() > 1 for row in counts]
    checked = compared_cells(adata.n_obs)
    return int(np.flatnonzero(checked & movable)[0]), int(np.flatnonzero(~checked & movable)[0])


def census_sampled(result_path, tmp_path, change=None):
    """The census route as a sampled validation has it: every cell's raw_sum and nnz (of the census' own
    counts, after `change`), the counts of the compared cells only, and which those are."""
    adata = ad.read_h5ad(result_path)
    if change:
        adata = change(adata)
    counts = sp.csr_matrix(adata.X)
    totals = CellTotals(included_genes(adata.var, ORGANISM))
    list(totals.counted([counts]))
    adata.obs = adata.obs.assign(**totals.as_dict())
    compared = compared_cells(adata.n_obs)
    adata.X = sp.csr_matrix(sp.diags(compared.astype(np.float32)) @ counts)
    adata.uns[READ_KEY] = {"bytes": 0, "value_compared": compared}
    path = tmp_path / "census.h5ad"
    adata.write_h5ad(path)
    return path


def compared_sampled(result, census_path, validation=SAMPLED):
    path, manifest = result
    cells = ad.read_h5ad(path).n_obs
    totals = slice_totals([path]) if validation["mode"] == "sampled" else None
    all_cells = np.ones(cells, dtype=bool)
    return compare_routes(path, census_path, ORGANISM, manifest, all_cells, None, (), validation, totals)


def count_added(row: int):
    def change(adata):
        counts = sp.csr_matrix(adata.X, copy=True)
        counts.data[counts.indptr[row]] += 1  # the cell's total changes
        adata.X = counts
        return adata

    return change


def value_moved(row: int):
    """One of the cell's counts moved to another of its genes: its total and nnz stay."""

    def change(adata):
        counts = sp.csr_matrix(adata.X, copy=True)
        stored = np.arange(counts.indptr[row], counts.indptr[row + 1])
        source = stored[counts.data[stored] > 1][0]
        counts.data[source] -= 1
        counts.data[stored[stored != source][0]] += 1
        adata.X = counts
        return adata

    return change


def test_a_sampled_validation_passes_agreeing_routes_comparing_a_share_of_the_counts(result, tmp_path):
    report = compared_sampled(result, census_sampled(result[0], tmp_path))
    totals = report["totals"]
    assert report["status"] == "passed" and report["validation"] == SAMPLED
    assert (
        0
        < totals["cells_compared_value_by_value"]
        < totals["matched_cells"]
        == totals["cells_totals_compared"]
    )


def test_a_sampled_validation_catches_a_changed_total_in_any_cell(result, tmp_path):
    checked, unchecked = cells_by_draw(result[0])
    for row in (checked, unchecked):
        report = compared_sampled(result, census_sampled(result[0], tmp_path, count_added(row)))
        assert report["status"] == "failed" and "cell totals: 1 cells" in describe_failure(report)


def test_a_value_moved_within_a_cell_is_caught_where_its_counts_are_compared(result, tmp_path):
    """The sampled validation's blind spot: a difference that keeps a cell's total and nnz is caught only in
    the cells it compares value by value (a full validation catches it in any)."""
    checked, unchecked = cells_by_draw(result[0])
    moved = compared_sampled(result, census_sampled(result[0], tmp_path, value_moved(checked)))
    assert moved["status"] == "failed" and "raw counts: 1 cells" in describe_failure(moved)
    unseen = census_sampled(result[0], tmp_path, value_moved(unchecked))
    assert compared_sampled(result, unseen)["status"] == "passed"
    full = census_like(result[0], tmp_path, value_moved(unchecked))
    assert compared_sampled(result, full, {"mode": "full"})["status"] == "failed"
