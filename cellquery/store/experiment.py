"""One organism's experiment (the builder's `experiment_builder.py`): obs, var, raw and normalized X and the
feature presence matrix, written a block of cells at a time."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import tiledbsoma as soma

from cellquery.cellxgene import ontology
from cellquery.cellxgene.inclusion import cell_stats
from cellquery.files import h5ad
from cellquery.store.arrays import (
    SORTED,
    add_dataframe,
    add_sparse,
    arrow_table,
    coo_table,
    global_order,
    tile_extents,
)
from cellquery.store.normalized import census_normalized
from cellquery.store.sources import Included

log = logging.getLogger(__name__)

LAYERS = ("raw", "normalized")
PRESENCE = "feature_dataset_presence_matrix"

LABELLED_TERMS = (
    "assay",
    "cell_type",
    "development_stage",
    "disease",
    "self_reported_ethnicity",
    "sex",
    "tissue",
)
CATEGORICAL_OBS = (
    "dataset_id",
    *[c for term in LABELLED_TERMS for c in (term, f"{term}_ontology_term_id")],
    "donor_id",
    "suspension_type",
    "tissue_type",
    "tissue_general",
    "tissue_general_ontology_term_id",
)
FLOAT_STATS = ("raw_sum", "raw_mean_nnz", "raw_variance_nnz")
OBS_COLUMNS = (  # the Census obs columns, in the Census order
    "dataset_id",
    *[c for term in LABELLED_TERMS for c in (term, f"{term}_ontology_term_id")],
    "donor_id",
    "is_primary_data",
    "observation_joinid",
    "suspension_type",
    "tissue_type",
    "tissue_general",
    "tissue_general_ontology_term_id",
    "raw_sum",
    "nnz",
    "raw_mean_nnz",
    "raw_variance_nnz",
    "n_measured_vars",
)


OBS_TYPES = {"is_primary_data": pa.bool_(), "nnz": pa.int64(), "n_measured_vars": pa.int64()} | dict.fromkeys(
    FLOAT_STATS, pa.float64()
)
OBS_SCHEMA = pa.schema(
    [("soma_joinid", pa.int64())]
    + [
        (
            c,
            pa.dictionary(pa.int32(), pa.large_string())
            if c in CATEGORICAL_OBS
            else OBS_TYPES.get(c, pa.large_string()),
        )
        for c in OBS_COLUMNS
    ]
)


def write_experiment(census_data, name: str, parts: list[Included], n_datasets: int) -> dict[str, dict]:
    """Write one organism's experiment; returns, per dataset, its cells and the fragments holding them (a
    later version drops a replaced dataset by dropping its fragments: `cellquery.store.increment`)."""
    var_ids = pd.Index(sorted(set().union(*(set(p.gene_ids) for p in parts))))
    var_info = pd.concat([p.genes for p in parts])
    var_info = var_info[~var_info.index.duplicated()].reindex(var_ids)
    n_obs = sum(len(p.rows) for p in parts)
    experiment = census_data.add_new_collection(name, soma.Experiment)
    measurement = experiment.add_new_collection("ms").add_new_collection("RNA", soma.Measurement)
    matrices = measurement.add_new_collection("X")
    for layer in LAYERS:
        add_sparse(matrices, layer, pa.float32(), (n_obs, len(var_ids))).close()
    add_sparse(measurement, PRESENCE, pa.bool_(), (n_datasets, len(var_ids))).close()
    add_dataframe(experiment, "obs", OBS_SCHEMA.empty_table(), n_obs)
    var = var_info.assign(nnz=0, n_measured_obs=0)
    add_dataframe(measurement, "var", _var_table(var).slice(0, 0), len(var))  # written once, counted
    experiment.close()
    return append_to_experiment(experiment.uri, parts, var, first=0)


def array_uris(experiment_uri: str) -> dict[str, str]:
    """The arrays of an experiment that hold its datasets' cells, by their path in it."""
    rna = f"{experiment_uri}/ms/RNA"
    return {"obs": f"{experiment_uri}/obs", PRESENCE: f"{rna}/{PRESENCE}"} | {
        f"X/{layer}": f"{rna}/X/{layer}" for layer in LAYERS
    }


def append_to_experiment(
    uri: str, parts: list[Included], var: pd.DataFrame | None = None, first: int | None = None
) -> dict[str, dict]:
    """Write datasets' cells after those an experiment holds (new genes after its `var`, read when not
    given), each dataset's cells in fragments of their own, from soma_joinid `first` (after the held cells
    by default); var written with its counts. Returns, per dataset, its cells and fragments."""
    var = read_var(uri) if var is None else var
    new_genes = [p.genes[~p.genes.index.isin(var.index)] for p in parts]
    if new_genes:
        new = pd.concat(new_genes)
        var = pd.concat([var, new[~new.index.duplicated()].assign(nnz=0, n_measured_obs=0)])
    if first is None:
        with soma.DataFrame.open(f"{uri}/obs") as obs:
            first = obs.domain[0][1] + 1
    total = first + sum(len(p.rows) for p in parts)
    _resize(uri, total, len(var), max((p.dataset_joinid for p in parts), default=-1) + 1)
    written, offset = {}, first
    for part in parts:
        written[part.source.dataset_id] = _write_part(uri, part, var, offset)
        offset += len(part.rows)
    # its counts changed: written whole, one fragment, read before the older ones
    with soma.DataFrame.open(f"{uri}/ms/RNA/var", "w") as frame:
        frame.write(_var_table(var))
    return written


def read_var(experiment_uri: str) -> pd.DataFrame:
    """An experiment's var by feature id, in soma_joinid order (its joinids are 0..n-1: genes are only
    ever added)."""
    with soma.DataFrame.open(f"{experiment_uri}/ms/RNA/var") as frame:
        var = frame.read().concat().to_pandas().sort_values("soma_joinid")
    return var.set_index("feature_id").drop(columns="soma_joinid")


def _var_table(var: pd.DataFrame):
    return arrow_table(var.reset_index(names="feature_id"))


def _resize(uri: str, n_obs: int, n_var: int, n_datasets: int) -> None:
    """Room for the cells, genes and datasets to come (each array reopened afterwards to write)."""
    arrays = array_uris(uri)
    for layer in LAYERS:
        with soma.SparseNDArray.open(arrays[f"X/{layer}"], "w") as array:
            array.resize((max(n_obs, array.shape[0]), max(n_var, array.shape[1])))
    with soma.SparseNDArray.open(arrays[PRESENCE], "w") as presence:
        presence.resize((max(n_datasets, presence.shape[0]), max(n_var, presence.shape[1])))
    for frame_uri, size in ((arrays["obs"], n_obs), (f"{uri}/ms/RNA/var", n_var)):
        with soma.DataFrame.open(frame_uri, "w") as frame:
            if size > frame.domain[0][1] + 1:
                frame.tiledbsoma_resize_soma_joinid_shape(size)


def _write_part(uri: str, part: Included, var: pd.DataFrame, offset: int) -> dict:
    """One dataset's cells: X (raw, normalized) a block at a time, its presence row, its obs rows."""
    arrays = array_uris(uri)
    before = {key: fragments(array) for key, array in arrays.items()}
    var_joinids = var.index.get_indexer(part.gene_ids)
    in_var_order = np.argsort(var_joinids, kind="stable")  # row-major coordinates, as global order asks
    part = replace(part, gene_columns=part.gene_columns[in_var_order], genes=part.genes.iloc[in_var_order])
    var_joinids = var_joinids[in_var_order]
    with soma.SparseNDArray.open(arrays[PRESENCE], "w") as presence:
        presence.write(
            coo_table(
                np.full(len(var_joinids), part.dataset_joinid, dtype=np.int64),
                var_joinids.astype(np.int64),
                np.ones(len(var_joinids), dtype=bool),
            )
        )
    stats = _write_x(arrays, part, var_joinids, offset, var)
    var.iloc[var_joinids, var.columns.get_loc("n_measured_obs")] += len(part.rows)
    obs = part.obs.copy()
    for key, values in stats.items():
        obs[key] = np.concatenate(values) if values else np.array([], dtype=np.float64)
    obs["n_measured_vars"] = len(part.gene_ids)
    with soma.DataFrame.open(arrays["obs"], "w") as frame:
        frame.write(arrow_table(census_obs(obs), CATEGORICAL_OBS, np.arange(offset, offset + len(obs))))
    return {
        "cells": [offset, offset + len(part.rows)],  # their soma_joinids, end excluded
        "dataset_joinid": part.dataset_joinid,
        "fragments": {key: sorted(fragments(array) - before[key]) for key, array in arrays.items()},
    }


def _write_x(arrays: dict, part: Included, var_joinids: np.ndarray, offset: int, var: pd.DataFrame) -> dict:
    """A dataset's raw and normalized counts, a block at a time; returns its cells' statistics."""
    stats = defaultdict(list)
    written = offset
    with (
        soma.SparseNDArray.open(arrays["X/raw"], "w") as raw,
        soma.SparseNDArray.open(arrays["X/normalized"], "w") as normalized,
    ):
        tiles = tile_extents(raw)  # normalized's too: both made by `add_sparse`
        for block_rows, block in h5ad.row_blocks(part.source.path, part.rows, part.counts_key):
            counts = block[:, part.gene_columns].tocsr()
            counts.eliminate_zeros()
            counts.sort_indices()  # row-major, as TileDB's global order asks within a tile
            for key, values in cell_stats(counts).items():
                stats[key].append(values)
            coo = counts.tocoo()
            rows = (coo.row + written).astype(np.int64)
            cols = var_joinids[coo.col].astype(np.int64)
            values = census_normalized(counts, part, block_rows)
            order = global_order(rows, cols, tiles)
            rows, cols = rows[order], cols[order]
            raw.write(coo_table(rows, cols, coo.data[order].astype(np.float32)), platform_config=SORTED)
            normalized.write(coo_table(rows, cols, values[order]), platform_config=SORTED)
            var.iloc[:, var.columns.get_loc("nnz")] += np.bincount(cols, minlength=len(var))
            written += len(block_rows)
            log.info("%s: %d of %d cells", part.source.dataset_id, written - offset, len(part.rows))
    return stats


def read_obs(experiment_uri: str) -> pd.DataFrame:
    """An experiment's obs as stored (the summary tables count its cells)."""
    with soma.DataFrame.open(f"{experiment_uri}/obs") as obs:
        return obs.read().concat().to_pandas()


def fragments(uri: str) -> set[str]:
    """The fragments of a TileDB array on local disk (what a write added: the difference)."""
    folder = Path(uri.removeprefix("file://")) / "__fragments"
    return {entry.name for entry in folder.iterdir()} if folder.exists() else set()


def census_obs(obs: pd.DataFrame) -> pd.DataFrame:
    """The Census obs columns, in the Census order (tissue_general derived as the builder does)."""
    obs = ontology.with_general_tissue(obs.reset_index(drop=True))
    obs["tissue_general"] = obs["tissue_general"].astype(str)
    obs["tissue_general_ontology_term_id"] = obs["tissue_general_ontology_term_id"].astype(str)
    obs["is_primary_data"] = obs["is_primary_data"].astype(bool)
    return obs[list(OBS_COLUMNS)]
