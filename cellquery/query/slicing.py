"""Slice one h5ad by the cell criteria out of core: obs first, then only the selected rows of the counts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellquery.cellxgene import ontology
from cellquery.cellxgene.inclusion import (
    CELL_ORGANISM,
    INCLUSION_COLUMNS,
    CellTotals,
    cell_stats,
    included_genes,
    length_scaled,
    normalized,
    row_sums,
)
from cellquery.cellxgene.joinkey import check_unique, dataset_label, require_join_key
from cellquery.cellxgene.release import CensusRelease
from cellquery.files import h5ad
from cellquery.files.atomic import atomic_path
from cellquery.spec.criteria import Criterion, obs_mask
from cellquery.spec.genes import with_feature_types
from cellquery.spec.query_spec import CELL_STATS, KEY_COLUMNS
from cellquery.workflow.faults import failpoint

log = logging.getLogger(__name__)

VAR_COLUMNS = ["feature_name", "feature_reference", "feature_biotype", "feature_length", "feature_type"]
TOTALS_KEY = "cell_totals"  # a slice's uns entry: each cell's raw_sum and nnz over the Census' genes


def with_cell_stats(path: Path, obs: pd.DataFrame, organism: str) -> pd.DataFrame:
    """Add the Census per-cell statistics, streaming over all rows in blocks (memory stays bounded)."""
    counts_key, var_key = h5ad.counts_keys(path)
    genes = included_genes(h5ad.read_frame(path, var_key), organism)
    parts: dict[str, list[np.ndarray]] = {}
    for _, block in h5ad.row_blocks(path, np.arange(len(obs)), counts_key):
        for name, values in cell_stats(block[:, genes]).items():
            parts.setdefault(name, []).append(values)
    obs = obs.copy()
    for name, values in parts.items():
        obs[name] = np.concatenate(values)
    obs["n_measured_vars"] = int(genes.sum())
    return obs


def with_normalized(
    blocks: Iterator[sp.csr_matrix],
    var: pd.DataFrame,
    columns: np.ndarray,
    organism: str,
    full_gene: np.ndarray,
) -> Iterator[dict[str, sp.csr_matrix]]:
    """Each block of counts (all of the dataset's features) as its `columns` in X and the Census' normalized
    values of them in `normalized`: a cell's sum runs over every gene the Census keeps, whatever `columns`."""
    lengths = var["feature_length"].to_numpy(dtype=np.float64)
    genes = included_genes(var, organism)
    done = 0
    for block in blocks:
        cells = full_gene[done : done + block.shape[0]]
        done += block.shape[0]
        sums = row_sums(length_scaled(block[:, genes], lengths[genes], cells))
        chosen = block[:, columns]
        yield {"X": chosen, "normalized": normalized(length_scaled(chosen, lengths[columns], cells), sums)}


def slice_columns(obs_columns: list[str]) -> list[str]:
    """A slice's obs: the keys, the columns asked for, and those the inclusion rules read."""
    return [*dict.fromkeys([*KEY_COLUMNS, *obs_columns, *INCLUSION_COLUMNS])]


def result_columns(obs_columns: list[str]) -> list[str]:
    """A result's obs: the keys and the columns asked for."""
    return [*dict.fromkeys([*KEY_COLUMNS, *obs_columns])]


def select_genes(var: pd.DataFrame, gene_ids: list[str] | None) -> np.ndarray:
    """Columns to keep: every feature, or the requested genes that this dataset measures."""
    if gene_ids is None:
        return np.arange(len(var))
    return np.flatnonzero(var.index.isin(gene_ids))


def slice_dataset(
    path: Path,
    criteria: list[Criterion],
    *,
    dataset_id: str,
    organism: str,
    release: CensusRelease,
    obs_columns: list[str],
    gene_ids: list[str] | None,
    out: Path,
    provenance: dict | None = None,
    layers: list[str] = (),
    label: str | None = None,
) -> dict:
    """Write the matching cells (raw counts in X, as the Census X/raw; `layers: [normalized]` adds the
    Census' normalized values, as the builder of `release` computes them) to `out`; returns counts. A
    missing or repeated join key of the selected cells stops it, naming the dataset by `label`
    (`cellquery.cellxgene.joinkey`)."""
    label = label or dataset_label(dataset_id)
    obs = h5ad.read_frame(path, "obs")
    require_join_key(obs.columns, label)
    if any(c.column in CELL_STATS for c in criteria):
        obs = with_cell_stats(path, obs, organism)
    obs["dataset_id"] = pd.Categorical([dataset_id] * len(obs))
    if set(obs_columns) & set(ontology.GENERAL_TISSUE_COLUMNS):
        obs = ontology.with_general_tissue(obs)
    rows = np.flatnonzero(obs_mask(obs, criteria) & release.cells_of(obs, organism))
    counts_key, var_key = h5ad.counts_keys(path)
    var = h5ad.read_frame(path, var_key)
    if not release.file_holds(h5ad.read_uns(path), obs, var, organism):
        rows = rows[:0]  # the Census holds none of the file's cells in this organism's experiment
    columns = select_genes(var, gene_ids)
    per_cell_organism = [CELL_ORGANISM] if CELL_ORGANISM in obs else []
    kept = h5ad.without_unused_categories(obs.iloc[rows][[*slice_columns(obs_columns), *per_cell_organism]])
    check_unique(kept, {dataset_id: label}, "h5ad")
    kept.index = pd.Index((dataset_id + ":" + kept["observation_joinid"].astype(str)).to_numpy())
    totals = CellTotals(included_genes(var, organism))  # what a sampled validation checks of every cell
    blocks = totals.counted(block for _, block in h5ad.row_blocks(path, rows, counts_key))
    if "normalized" in layers:
        full_gene = obs["assay_ontology_term_id"].astype(str).isin(release.full_gene_assays).to_numpy()[rows]
        blocks = with_normalized(blocks, var, columns, organism, full_gene)
    else:
        blocks = (block[:, columns] for block in blocks)
    source = {"dataset_id": dataset_id, "n_obs": len(obs), **(provenance or {})}
    with atomic_path(out) as tmp:
        selected_var = with_feature_types(var.iloc[columns])[VAR_COLUMNS].copy()
        h5ad.write_streamed(tmp, kept, selected_var, blocks, uns={"source": source}, layers=layers)
        h5ad.write_uns_entry(tmp, TOTALS_KEY, totals.as_dict())
        failpoint("slice")
    log.info("%s: %d of %d cells, %d features", dataset_id, len(rows), len(obs), len(columns))
    return {"dataset_id": dataset_id, "cells": len(rows), "of": len(obs), "features": len(columns)}
