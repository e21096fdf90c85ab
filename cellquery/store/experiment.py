"""One organism's experiment (the builder's `experiment_builder.py`): obs, var, raw and normalized X and the
feature presence matrix, written a block of cells at a time."""

from __future__ import annotations

import logging
from collections import defaultdict

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


def write_experiment(census_data, name: str, parts: list[Included], n_datasets: int) -> pd.DataFrame:
    """Write one organism's experiment; returns its obs (for the summary tables)."""
    var_ids = pd.Index(sorted(set().union(*(set(p.gene_ids) for p in parts))))
    var_info = pd.concat([p.genes for p in parts])
    var_info = var_info[~var_info.index.duplicated()].reindex(var_ids)
    n_obs = sum(len(p.rows) for p in parts)
    experiment = census_data.add_new_collection(name, soma.Experiment)
    measurement = experiment.add_new_collection("ms").add_new_collection("RNA", soma.Measurement)
    matrices = measurement.add_new_collection("X")
    raw = add_sparse(matrices, "raw", pa.float32(), (n_obs, len(var_ids)))
    normalized = add_sparse(matrices, "normalized", pa.float32(), (n_obs, len(var_ids)))
    presence = add_sparse(
        measurement, "feature_dataset_presence_matrix", pa.bool_(), (n_datasets, len(var_ids))
    )
    tiles = tile_extents(raw)  # normalized's too: both made by `add_sparse`
    gene_nnz = np.zeros(len(var_ids), dtype=np.int64)
    measured_obs = np.zeros(len(var_ids), dtype=np.int64)
    obs_parts, offset = [], 0
    for part in parts:
        var_joinids = var_ids.get_indexer(part.gene_ids)
        measured_obs[var_joinids] += len(part.rows)
        presence.write(
            coo_table(
                np.full(len(var_joinids), part.dataset_joinid, dtype=np.int64),
                var_joinids.astype(np.int64),
                np.ones(len(var_joinids), dtype=bool),
            )
        )
        stats = defaultdict(list)
        written = offset
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
            gene_nnz += np.bincount(cols, minlength=len(gene_nnz))
            written += len(block_rows)
            log.info("%s: %s, %d of %d cells", name, part.source.dataset_id, written - offset, len(part.rows))
        obs = part.obs.copy()
        for key, values in stats.items():
            obs[key] = np.concatenate(values) if values else np.array([], dtype=np.float64)
        obs["n_measured_vars"] = len(part.gene_ids)
        obs_parts.append(obs)
        offset += len(part.rows)
    for array in (raw, normalized, presence):
        array.close()
    obs = census_obs(pd.concat(obs_parts) if obs_parts else pd.DataFrame())
    add_dataframe(experiment, "obs", arrow_table(obs, CATEGORICAL_OBS))
    var = var_info.reset_index(names="feature_id")
    var["nnz"] = gene_nnz
    var["n_measured_obs"] = measured_obs
    add_dataframe(measurement, "var", arrow_table(var))
    experiment.close()
    return obs


def census_obs(obs: pd.DataFrame) -> pd.DataFrame:
    """The Census obs columns, in the Census order (tissue_general derived as the builder does)."""
    obs = ontology.with_general_tissue(obs.reset_index(drop=True))
    obs["tissue_general"] = obs["tissue_general"].astype(str)
    obs["tissue_general_ontology_term_id"] = obs["tissue_general_ontology_term_id"].astype(str)
    obs["is_primary_data"] = obs["is_primary_data"].astype(bool)
    return obs[list(OBS_COLUMNS)]
