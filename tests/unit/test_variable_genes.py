"""Highly variable genes on a small synthetic result: the flags written into the file's var are scanpy's own
seurat_v3 flags, X is left as it was, and what seurat_v3 cannot fit (or hold in memory) is a `SpecError`."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

from cellquery.errors import SpecError
from cellquery.query.variable_genes import (
    MAX_CELLS,
    MAX_NONZEROS,
    NONZEROS_PER_CELL,
    check_fits,
    mark_variable_genes,
    max_cells,
)

CELLS, GENES, VARIABLE = 300, 200, 20
COLUMNS = ["highly_variable", "highly_variable_rank", "means", "variances", "variances_norm"]


def write_result(path, cells=CELLS, dataset_ids=("dataset-a", "dataset-b")):
    """A result h5ad: negative binomial counts, the first VARIABLE overdispersed, the last two silent."""
    rng = np.random.default_rng(7)
    mean = rng.uniform(0.2, 5, GENES)
    dispersion = np.where(np.arange(GENES) < VARIABLE, 0.3, 50.0)  # small: far more variance than the mean
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mean), (cells, GENES))
    counts[:, -2:] = 0  # zero-variance genes
    obs = pd.DataFrame(
        {"dataset_id": pd.Categorical(np.resize(dataset_ids, cells)), "donor_id": "d1"},
        index=[f"cell{i}" for i in range(cells)],
    )
    var = pd.DataFrame(
        {"feature_name": [f"G{i}" for i in range(GENES)], "feature_length": np.arange(GENES)},
        index=[f"ENSG{i:011d}" for i in range(GENES)],
    )
    ad.AnnData(sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var).write_h5ad(path)
    return path


def stored_x(path):
    with h5py.File(path, "r") as f:
        return {key: f["X"][key][()] for key in ("data", "indices", "indptr")}


@pytest.mark.parametrize("batch_key", [None, "dataset_id"])
def test_the_flags_are_scanpys_and_x_is_untouched(tmp_path, batch_key):
    path = write_result(tmp_path / "result.h5ad")
    before = stored_x(path)
    summary = mark_variable_genes(path, n_top=50, batch_key=batch_key)
    assert summary == {
        "n_top_requested": 50,
        "n_top": 50,
        "flagged": 50,
        "cells": CELLS,
        "genes": GENES,
        "batch_key": batch_key,
        "skipped": None,
    }
    marked = ad.read_h5ad(path)
    by_hand = sc.pp.highly_variable_genes(
        ad.read_h5ad(path), flavor="seurat_v3", n_top_genes=50, batch_key=batch_key, inplace=False
    )
    columns = [*COLUMNS, "highly_variable_nbatches"] if batch_key else COLUMNS
    pd.testing.assert_frame_equal(marked.var[columns], by_hand[columns], check_names=False)
    assert marked.var["highly_variable"].iloc[:VARIABLE].all()  # the overdispersed genes are found
    assert list(marked.var.columns[:2]) == ["feature_name", "feature_length"]
    for key, array in stored_x(path).items():
        np.testing.assert_array_equal(array, before[key])


def test_a_second_run_replaces_the_first_and_n_top_is_capped(tmp_path):
    path = write_result(tmp_path / "result.h5ad")
    mark_variable_genes(path, n_top=50, batch_key="dataset_id")
    summary = mark_variable_genes(path, n_top=5000, batch_key=None)
    assert (summary["n_top_requested"], summary["n_top"], summary["flagged"]) == (5000, GENES, GENES)
    var = ad.read_h5ad(path).var
    assert "highly_variable_nbatches" not in var  # stale: the second run has no batches
    assert var["highly_variable"].all()


def test_a_single_cell_batch_is_a_spec_error_not_a_crash(tmp_path):
    path = write_result(tmp_path / "result.h5ad", dataset_ids=["dataset-a"] * (CELLS - 1) + ["lonely"])
    with pytest.raises(SpecError, match=r"batch 'lonely' of 'dataset_id' has 1 cells and 0 genes"):
        mark_variable_genes(path, n_top=50, batch_key="dataset_id")
    assert "highly_variable" not in ad.read_h5ad(path).var


def test_unknown_or_missing_batches_are_spec_errors(tmp_path):
    path = write_result(tmp_path / "result.h5ad")
    with pytest.raises(SpecError, match="batch_key 'tissue' is not a column"):
        mark_variable_genes(path, n_top=50, batch_key="tissue")
    path = write_result(tmp_path / "missing.h5ad", dataset_ids=["dataset-a", None])
    with pytest.raises(SpecError, match="missing for 150 cells"):
        mark_variable_genes(path, n_top=50, batch_key="dataset_id")


def test_an_empty_result_is_skipped(tmp_path):
    path = write_result(tmp_path / "empty.h5ad", cells=0, dataset_ids=[])
    summary = mark_variable_genes(path, n_top=50, batch_key="dataset_id")
    assert summary["skipped"] == "the result is empty (0 cells, 200 genes)"
    assert (summary["n_top"], summary["flagged"]) == (0, 0)
    assert "highly_variable" not in ad.read_h5ad(path).var


def test_check_fits_holds_the_memory_limit():
    whole = max_cells(60_000)
    assert whole == MAX_NONZEROS // NONZEROS_PER_CELL
    check_fits(whole, 60_000)
    with pytest.raises(SpecError) as raised:
        check_fits(whole + 1, 60_000)
    assert str(raised.value).startswith(f"output.hvg: the result holds {whole + 1:,} cells of 60,000 genes")
    assert f"at most {whole:,} cells" in str(raised.value) and "\n" not in str(raised.value)
    check_fits(MAX_CELLS, 40)  # a small panel: obs, not the counts, bounds it
    with pytest.raises(SpecError, match=f"at most {MAX_CELLS:,} cells"):
        check_fits(MAX_CELLS + 1, 40)
    with pytest.raises(SpecError, match="the result keeps 8 genes; seurat_v3 fits variance against mean"):
        check_fits(1_000, 8)  # too few genes to fit at all
    check_fits(whole * 2, 60_000, nonzeros=MAX_NONZEROS)  # the file's own count beats the estimate
    with pytest.raises(SpecError, match=f"at most {MAX_NONZEROS:,}"):
        check_fits(1_000, 60_000, nonzeros=MAX_NONZEROS + 1)
