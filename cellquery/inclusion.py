"""The Census builder's inclusion rules and per-cell statistics, shared by every route that must agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

INCLUDED_TISSUE_TYPES = ("tissue", "organoid")
# RNA assays the Census builder accepts (a subset of its allow-list: the ones the demo can meet).
RNA_ASSAYS = (
    "EFO:0008722",  # Drop-seq
    "EFO:0008780",  # inDrop
    "EFO:0008913",  # single-cell RNA sequencing
    "EFO:0008919",  # Seq-Well
    "EFO:0008930",  # Smart-seq
    "EFO:0008931",  # Smart-seq2
    "EFO:0008953",  # STRT-seq
    "EFO:0009899",  # 10x 3' v2
    "EFO:0009900",  # 10x 5' v2
    "EFO:0009901",  # 10x 3' v1
    "EFO:0009922",  # 10x 3' v3
    "EFO:0010010",  # CEL-seq2
    "EFO:0011025",  # 10x 5' v1
    "EFO:0030002",  # microwell-seq
    "EFO:0030003",  # 10x 3' transcription profiling
    "EFO:0030004",  # 10x 5' transcription profiling
)


# The obs columns the rules read: every slice keeps them, whatever obs columns a spec asks for.
INCLUSION_COLUMNS = ("tissue_type", "assay_ontology_term_id")


def included_cells(obs: pd.DataFrame) -> np.ndarray:
    """Cells the Census keeps: tissue or organoid, and an RNA assay of the allow-list."""
    tissue = obs["tissue_type"].astype(str).isin(INCLUDED_TISSUE_TYPES)
    assay = obs["assay_ontology_term_id"].astype(str).isin(RNA_ASSAYS)
    return (tissue & assay).to_numpy()


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


# Full-gene assays, whose counts the Census divides by the feature length before it normalises a cell
# (the builder's FULL_GENE_ASSAY).
FULL_GENE_ASSAYS = (
    "EFO:0003755",  # FL-cDNA
    "EFO:0008747",  # FRISCR
    "EFO:0008763",  # Hi-SCL
    "EFO:0008797",  # MATQ-seq
    "EFO:0008877",  # Quartz-seq
    "EFO:0008930",  # Smart-seq
    "EFO:0008931",  # Smart-seq2
    "EFO:0008956",  # SUPeR-seq
    "EFO:0009999",  # G&T-Seq
    "EFO:0010004",  # SCRB-seq
    "EFO:0010006",  # scM&T-seq
    "EFO:0010022",  # Smart-3Seq
    "EFO:0010058",  # Fluidigm C1-based library preparation
    "EFO:0010184",  # Smart-like
    "EFO:0022396",  # TruSeq
    "EFO:0022488",  # Smart-seq3
    "EFO:0022839",  # STORM-seq
    "EFO:0030031",  # SCOPE-chip
    "EFO:0030060",  # mCT-seq
    "EFO:0030061",  # mcSCRB-seq
    "EFO:0700016",  # Smart-seq v4
)


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


def row_sums(matrix: sp.csr_matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1, dtype=np.float64)).ravel()
