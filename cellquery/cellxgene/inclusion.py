"""The Census builder's gene rule, per-cell statistics and normalisation, shared by every route that must
agree (the cell rules differ per release: `cellquery.cellxgene.release`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

# The obs columns the cell rules read (`cellquery.cellxgene.release`): every slice keeps them, whatever obs
# columns a spec asks for, and the organism of each cell where its file records one (schema 5).
INCLUSION_COLUMNS = ("tissue_type", "assay_ontology_term_id")
CELL_ORGANISM = "organism_ontology_term_id"


def included_genes(var: pd.DataFrame, organism: str) -> np.ndarray:
    """Features the Census keeps: genes (not spike-ins) of the experiment's organism."""
    gene = var["feature_biotype"].astype(str) == "gene"
    return (gene & (var["feature_reference"].astype(str) == organism)).to_numpy()


def cell_stats(counts: sp.csr_matrix) -> dict[str, np.ndarray]:
    """raw_sum, nnz, raw_mean_nnz and raw_variance_nnz (sample variance of the non-zero values) per row."""
    counts = counts.tocsr()
    raw_sum = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    nnz = np.diff(counts.indptr).astype(np.int64)
    squares = np.asarray(counts.multiply(counts).sum(axis=1), dtype=np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(nnz > 0, raw_sum / nnz, 0.0)
        variance = np.where(nnz > 1, (squares - nnz * mean**2) / (nnz - 1), 0.0)
    return {"raw_sum": raw_sum, "nnz": nnz, "raw_mean_nnz": mean, "raw_variance_nnz": variance}


def length_scaled(counts: sp.csr_matrix, lengths: np.ndarray, full_gene: np.ndarray) -> sp.csr_matrix:
    """Counts as the Census normalises them: in cells of a full-gene assay (`full_gene`, per row) divided by
    the feature length (`lengths`, per column); float32, as the builder computes them."""
    counts = sp.csr_matrix(counts, dtype=np.float64)
    counts.eliminate_zeros()
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    values = np.where(full_gene[rows], counts.data / lengths[counts.indices], counts.data)
    return sp.csr_matrix((values.astype(np.float32), counts.indices, counts.indptr), counts.shape)


def normalized(scaled: sp.csr_matrix, sums: np.ndarray) -> sp.csr_matrix:
    """The Census `normalized` values of length-scaled counts: each row divided by `sums`, the row sums of
    the scaled counts of every gene the Census keeps of the dataset (rows summing to 0 stay empty)."""
    rows = np.repeat(np.arange(scaled.shape[0]), np.diff(scaled.indptr))
    values = np.divide(scaled.data, sums[rows], out=np.zeros(len(rows)), where=sums[rows] > 0)
    return sp.csr_matrix((values.astype(np.float32), scaled.indices, scaled.indptr), scaled.shape)


class CellTotals:
    """Each row's `raw_sum` and `nnz` (its nonzero values) over the genes the Census keeps (`genes`, a mask
    of the file's features), counted as blocks of rows stream past: what the Census states of every cell."""

    def __init__(self, genes: np.ndarray):
        self.genes, self.sums, self.nonzero = genes, [np.zeros(0)], [np.zeros(0, dtype=np.int64)]

    def counted(self, blocks: Iterator[sp.csr_matrix]) -> Iterator[sp.csr_matrix]:
        for block in blocks:
            kept = sp.csr_matrix(block[:, self.genes])
            self.sums.append(row_sums(kept))
            self.nonzero.append(np.asarray((kept != 0).sum(axis=1), dtype=np.int64).ravel())
            yield block

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"raw_sum": np.concatenate(self.sums), "nnz": np.concatenate(self.nonzero)}


def row_sums(matrix: sp.csr_matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1, dtype=np.float64)).ravel()
