"""Route comparison on tiny synthetic results: identical routes pass; a changed count, a missing cell or a
changed obs value fails with a line naming it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellquery.criteria import Criterion
from cellquery.slicing import slice_dataset
from cellquery.validate import compare_routes, describe_failure

ORGANISM = "NCBITaxon:9606"


@pytest.fixture(scope="module")
def result(tiny_h5ads, tmp_path_factory):
    """One dataset's slice as a result, and its manifest row."""
    dataset_id, path = tiny_h5ads[0]
    out = tmp_path_factory.mktemp("routes") / "result.h5ad"
    slice_dataset(
        path,
        [Criterion("is_primary_data", "==", (True,))],
        dataset_id=dataset_id,
        organism=ORGANISM,
        obs_columns=["cell_type"],
        gene_ids=None,
        out=out,
    )
    manifest = pd.DataFrame(
        [{"dataset_id": dataset_id, "uid": "uid-1", "key": f"cellxgene/{dataset_id}.h5ad"}]
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
