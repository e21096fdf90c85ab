"""Highly variable genes of a result: scanpy's `seurat_v3` on the raw counts, written into the file's var.

The counts are read into memory (`check_fits` bounds the result first); only var is rewritten, X is not.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from cellquery.errors import SpecError

# Peak memory measured with /usr/bin/time -v (scanpy 1.11.5, synthetic float32 CSR, read_h5ad + seurat_v3,
# no batch and 2 or 20 batches): 0.23 GB above the bare interpreter for 50k cells x 2k genes with 10M
# nonzeros, 0.85 GB for 50M nonzeros, 3.2 GB for 200k x 5k with 200M: ~17 bytes per stored nonzero, X once
# plus one copy (mark_variable_genes on the 200M file: the same peak, 12 s). 400M nonzeros thus peak near
# 7 GB, comfortable on a 24 GiB machine.
MAX_NONZEROS = 400_000_000
# Before the counts exist only cells and genes are known: assume a cell stores at most this many nonzeros
# (droplet cells of a whole transcriptome typically hold 1,000-3,000), so 160,000 such cells fit.
NONZEROS_PER_CELL = 2_500
# obs is read too: ~220 bytes a cell measured on result obs, so 5M cells hold ~1.1 GB however few the genes.
MAX_CELLS = 5_000_000
# skmisc's loess fits log variance on log mean over the genes that vary; it crashes the process (SIGSEGV)
# on fewer than 4 points, so each batch needs at least this many varying genes.
MIN_VARYING_GENES = 4
# Fewer genes than this rarely fit at all (measured on negative binomial counts of 1,000 cells: 10 genes
# failed 5 of 5 fits, 15 genes 2 of 5, 20 and more none): a gene panel this small is refused before any job.
MIN_GENES = 30
# What seurat_v3 adds to var (the last only with a batch_key); stale ones are dropped before a new run.
HVG_COLUMNS = (
    "highly_variable",
    "highly_variable_rank",
    "means",
    "variances",
    "variances_norm",
    "highly_variable_nbatches",
)
_SAMPLE_HINT = "leave output.hvg out, or sample the result down"
_BATCH_HINT = "choose another batch_key, or leave it or output.hvg out"


def max_cells(n_genes: int) -> int:
    """The most cells of `n_genes` genes whose highly variable genes are computed in memory."""
    per_cell = max(1, min(n_genes, NONZEROS_PER_CELL))
    return min(MAX_CELLS, MAX_NONZEROS // per_cell)


def check_fits(n_cells: int, n_genes: int, *, nonzeros: int | None = None) -> None:
    """Raise `SpecError` if a result this size is too big for in-memory `seurat_v3`.

    Without `nonzeros` the stored counts are estimated from the cells and genes (`max_cells`); with it (the
    file's own count) the memory limit is checked exactly.
    """
    if n_genes < MIN_GENES:
        raise SpecError(
            f"output.hvg: the result keeps {n_genes:,} gene{'' if n_genes == 1 else 's'}; "
            "seurat_v3 fits variance against mean over at "
            f"least {MIN_GENES} (leave output.hvg out, or ask for more genes)"
        )
    limit = max_cells(n_genes) if nonzeros is None else MAX_CELLS
    if n_cells > limit:
        raise SpecError(
            f"output.hvg: the result holds {n_cells:,} cells of {n_genes:,} genes; highly variable genes are "
            f"computed in memory, for results of at most {limit:,} cells of that many genes ({_SAMPLE_HINT})"
        )
    if nonzeros is not None and nonzeros > MAX_NONZEROS:
        raise SpecError(
            f"output.hvg: the result stores {nonzeros:,} nonzero counts; highly variable genes are computed "
            f"in memory, for results of at most {MAX_NONZEROS:,} ({_SAMPLE_HINT})"
        )


def mark_variable_genes(path: Path, *, n_top: int, batch_key: str | None) -> dict:
    """Flag the `n_top` most variable genes (seurat_v3, raw counts in X) in the var of the h5ad at `path`.

    `n_top` above the gene count is capped (every gene is flagged). An empty result is left as it is.
    Returns a summary: n_top asked and used, genes flagged, cells, genes, batch_key, skipped (or None).
    """
    if n_top < 1:
        raise SpecError(f"output.hvg: n_top is {n_top}; it must be at least 1")
    n_cells, n_genes, nonzeros = _shape(path)
    summary = {"n_top_requested": n_top, "n_top": min(n_top, n_genes), "flagged": 0}
    summary |= {"cells": n_cells, "genes": n_genes, "batch_key": batch_key, "skipped": None}
    if n_cells == 0 or n_genes == 0:
        return summary | {"n_top": 0, "skipped": f"the result is empty ({n_cells} cells, {n_genes} genes)"}
    check_fits(n_cells, n_genes, nonzeros=nonzeros)
    adata = ad.read_h5ad(path)
    adata.var = adata.var.drop(columns=[c for c in HVG_COLUMNS if c in adata.var])
    _check_batches(adata, batch_key)
    _run_seurat_v3(adata, n_top=summary["n_top"], batch_key=batch_key)
    _replace_var(path, adata.var)
    return summary | {"flagged": int(adata.var["highly_variable"].sum())}


def _shape(path: Path) -> tuple[int, int, int]:
    """Cells, genes and stored counts of the h5ad's X, read from its attributes (no counts loaded)."""
    with h5py.File(path, "r") as f:
        x = f["X"]
        if isinstance(x, h5py.Dataset):  # dense
            n_cells, n_genes = x.shape
            return n_cells, n_genes, n_cells * n_genes
        n_cells, n_genes = (int(n) for n in x.attrs["shape"])
        return n_cells, n_genes, int(x["data"].shape[0])


def _check_batches(adata: ad.AnnData, batch_key: str | None) -> None:
    """Raise `SpecError` unless every batch can be fitted: a known column, no missing values, enough genes."""
    if batch_key is None:
        codes, names = np.zeros(adata.n_obs, dtype=np.intp), pd.Index(["the result"])
    elif batch_key not in adata.obs:
        raise SpecError(
            f"output.hvg: batch_key {batch_key!r} is not a column of the result's obs "
            f"({', '.join(map(str, adata.obs.columns))})"
        )
    else:
        codes, names = pd.factorize(adata.obs[batch_key], use_na_sentinel=True)
        names = [f"batch '{name}' of {batch_key!r}" for name in names]
        if (missing := int((codes < 0).sum())) > 0:
            raise SpecError(f"output.hvg: batch_key {batch_key!r} is missing for {missing:,} cells")
    varying = _varying_genes(adata.X, codes, len(names))
    for name, cells, genes in zip(names, np.bincount(codes, minlength=len(names)), varying, strict=True):
        if genes < MIN_VARYING_GENES:
            raise SpecError(
                f"output.hvg: {name} has {cells:,} cells and {genes:,} genes whose counts vary; seurat_v3 "
                f"needs at least {MIN_VARYING_GENES} ({_BATCH_HINT})"
            )


def _varying_genes(x, codes: np.ndarray, n_batches: int) -> np.ndarray:
    """Per batch, how many genes' counts are not constant (exact for integer counts; one float64 copy)."""
    x = sparse.csr_matrix(x)
    n_cells = np.bincount(codes, minlength=n_batches)[:, None]
    onehot = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), (n_batches, len(codes)))
    sums = (onehot @ x).toarray()
    squares = sparse.csr_matrix((np.square(x.data, dtype=np.float64), x.indices, x.indptr), x.shape)
    sums_of_squares = (onehot @ squares).toarray()
    return ((n_cells * sums_of_squares - np.square(sums)) > 0).sum(axis=1)


def _run_seurat_v3(adata: ad.AnnData, *, n_top: int, batch_key: str | None) -> None:
    """scanpy's seurat_v3 in place; a loess fit the data cannot support becomes a `SpecError`."""
    import scanpy as sc  # slow to import: only when genes are marked

    try:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top, batch_key=batch_key)
    except ValueError as error:
        if not (error.args and isinstance(error.args[0], bytes)):
            raise  # not skmisc's loess ("svddc failed in l2fit", "There are other near singularities ...")
        raise _fit_failed(adata, batch_key, error.args[0].decode(errors="replace")) from error


def _fit_failed(adata: ad.AnnData, batch_key: str | None, detail: str) -> SpecError:
    """The one line for a loess fit skmisc refused, naming the cells and genes it had."""
    if batch_key is None:
        where = f"the result ({adata.n_obs:,} cells"
    else:
        smallest = int(adata.obs.groupby(batch_key, observed=True).size().min())
        where = f"the batches of {batch_key!r} (the smallest {smallest:,} cells"
    return SpecError(
        f"output.hvg: seurat_v3's loess fit failed on {where}, {adata.n_vars:,} genes): {detail}; too few "
        f"cells or genes to fit variance against mean ({_BATCH_HINT})"
    )


def _replace_var(path: Path, var: pd.DataFrame) -> None:
    """Write `var` over the h5ad's var group, X untouched: written beside it, then swapped in by name."""
    staged = "_var_hvg_staged"
    with h5py.File(path, "r+") as f:
        if staged in f:  # left by a writer that was killed
            del f[staged]
        ad.io.write_elem(f, staged, var)
        del f["var"]
        f.move(staged, "var")
