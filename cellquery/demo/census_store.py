"""Build a Census-shaped TileDB-SOMA store (Census schema 2.4.0) from CELLxGENE h5ads.

The builder's inclusion rules apply: cells with tissue_type tissue or organoid and an RNA assay of the
allow-list, the experiment's organism from uns; genes with biotype "gene" of that organism; raw counts from
raw.X when present, else X; duplicate cells kept and flagged by `is_primary_data`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import tiledbsoma as soma
from tiledbsoma.options import TileDBWriteOptions

from cellquery.cellxgene import ontology
from cellquery.cellxgene.inclusion import (
    cell_stats,
    included_genes,
    length_scaled,
    normalized,
    row_sums,
)
from cellquery.cellxgene.release import CensusRelease
from cellquery.files import h5ad
from cellquery.files.atomic import atomic_path

log = logging.getLogger(__name__)

SORTED = TileDBWriteOptions(sort_coords=False)  # coordinates arrive in global order (`_global_order`)

KEPT_MANTISSA_BITS = 15  # of normalized values (the builder's _roundHalfToEven)
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
SUMMARY_CATEGORIES = (
    "assay",
    "cell_type",
    "disease",
    "self_reported_ethnicity",
    "sex",
    "suspension_type",
    "tissue",
    "tissue_general",
)


@dataclass(frozen=True)
class SourceDataset:
    """One h5ad going into the store, with the identifiers the Census records for it."""

    dataset_id: str
    dataset_version_id: str
    title: str
    path: Path
    collection_id: str = ""
    collection_name: str = ""


@dataclass
class _Included:
    """What one dataset contributes to one experiment after the inclusion rules."""

    source: SourceDataset
    dataset_joinid: int
    rows: np.ndarray  # row numbers of included cells in the h5ad
    obs: pd.DataFrame
    gene_columns: np.ndarray  # column numbers of included genes in the counts matrix
    genes: pd.DataFrame  # feature_name, feature_type, feature_length of the included genes
    counts_key: str
    organism_label: str
    experiment: str
    full_gene: np.ndarray  # whether each included cell's assay is a full-gene one

    @property
    def gene_ids(self) -> pd.Index:
        return self.genes.index


def _parts(source: SourceDataset, dataset_joinid: int, release: CensusRelease) -> list[_Included]:
    """What one h5ad contributes to each experiment of the release: its cells of the experiment's organism
    (per file in schema 7, per cell in schema 5) that the builder keeps."""
    uns = h5ad.read_uns(source.path)
    obs = h5ad.read_frame(source.path, "obs")
    counts_key, var_key = h5ad.counts_keys(source.path)
    var = h5ad.read_frame(source.path, var_key)
    parts = []
    for organism in release.experiments.values():
        if not release.file_holds(uns, obs, var, organism):
            continue
        rows = np.flatnonzero(release.included_cells(obs, organism))
        if len(rows):
            parts.append(
                _part(source, dataset_joinid, release, organism, obs.iloc[rows].copy(), rows, var, counts_key)
            )
    return parts


def _part(source, dataset_joinid, release, organism, obs, rows, var, counts_key) -> _Included:
    keep_genes = included_genes(var, organism)
    obs["dataset_id"] = source.dataset_id
    genes = var.loc[keep_genes, ["feature_name", "feature_type", "feature_length"]]
    return _Included(
        source=source,
        dataset_joinid=dataset_joinid,
        rows=rows,
        obs=obs,
        gene_columns=np.flatnonzero(keep_genes),
        genes=genes.astype({"feature_name": str, "feature_type": str, "feature_length": np.int64}),
        counts_key=counts_key,
        organism_label=ontology.label(organism),
        experiment=release.experiment(organism),
        full_gene=obs["assay_ontology_term_id"].astype(str).isin(release.full_gene_assays).to_numpy(),
    )


def _table(frame: pd.DataFrame, categorical=()) -> pa.Table:
    """An Arrow table with soma_joinid 0..n-1; `categorical` columns dictionary-encoded."""
    columns = {"soma_joinid": pa.array(np.arange(len(frame), dtype=np.int64))}
    for column in frame.columns:
        values = frame[column]
        if column in categorical:
            columns[column] = pa.DictionaryArray.from_pandas(pd.Categorical(values.astype(str))).cast(
                pa.dictionary(pa.int32(), pa.large_string())
            )
        elif values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype):
            columns[column] = pa.array(values.astype(str).to_numpy(), type=pa.large_string())
        else:
            columns[column] = pa.array(values.to_numpy())
    return pa.table(columns)


def _add_dataframe(parent, name: str, table: pa.Table) -> None:
    """Create, write, close, then link: writing through `add_new_dataframe` can lose categories."""
    uri = f"{parent.uri}/{name}"
    domain = [(0, max(table.num_rows - 1, 0))]
    soma.DataFrame.create(uri, schema=table.schema, domain=domain).close()
    with soma.DataFrame.open(uri, "w") as frame:
        if table.num_rows:
            frame.write(table)
    with soma.DataFrame.open(uri) as frame:
        parent.set(name, frame, use_relative_uri=True)


def _add_sparse(parent, name: str, dtype: pa.DataType, shape: tuple[int, int]):
    uri = f"{parent.uri}/{name}"
    array = soma.SparseNDArray.create(uri, type=dtype, shape=(max(shape[0], 1), max(shape[1], 1)))
    parent.set(name, array, use_relative_uri=True)
    return array


def _coo_table(rows: np.ndarray, cols: np.ndarray, data: np.ndarray) -> pa.Table:
    return pa.table({"soma_dim_0": rows, "soma_dim_1": cols, "soma_data": data})


def _tile_extents(array) -> tuple[int, int]:
    dims = json.loads(array.schema_config_options().dims)
    return int(dims["soma_dim_0"]["tile"]), int(dims["soma_dim_1"]["tile"])


def _global_order(rows: np.ndarray, cols: np.ndarray, tiles: tuple[int, int]) -> np.ndarray:
    """The permutation that puts row-major coordinates (a CSR block's) into TileDB's global order: tiles
    row-major, then cells row-major within a tile. Written in that order, TileDB need not sort a block
    (`sort_coords=False`): 3-6 times faster at the atlas scale, the same fragments."""
    tile_rows, tile_cols = tiles
    n_tile_cols = int(cols.max()) // tile_cols + 1 if len(cols) else 1
    return np.argsort((rows // tile_rows) * n_tile_cols + cols // tile_cols, kind="stable")


def _write_experiment(census_data, name: str, parts: list[_Included], n_datasets: int) -> pd.DataFrame:
    """Write one organism's experiment; returns its obs (for the summary tables)."""
    var_ids = pd.Index(sorted(set().union(*(set(p.gene_ids) for p in parts))))
    var_info = pd.concat([p.genes for p in parts])
    var_info = var_info[~var_info.index.duplicated()].reindex(var_ids)
    n_obs = sum(len(p.rows) for p in parts)
    experiment = census_data.add_new_collection(name, soma.Experiment)
    measurement = experiment.add_new_collection("ms").add_new_collection("RNA", soma.Measurement)
    matrices = measurement.add_new_collection("X")
    raw = _add_sparse(matrices, "raw", pa.float32(), (n_obs, len(var_ids)))
    normalized = _add_sparse(matrices, "normalized", pa.float32(), (n_obs, len(var_ids)))
    presence = _add_sparse(
        measurement, "feature_dataset_presence_matrix", pa.bool_(), (n_datasets, len(var_ids))
    )
    tiles = _tile_extents(raw)  # normalized's too: both made by `_add_sparse`
    gene_nnz = np.zeros(len(var_ids), dtype=np.int64)
    measured_obs = np.zeros(len(var_ids), dtype=np.int64)
    obs_parts, offset = [], 0
    for part in parts:
        var_joinids = var_ids.get_indexer(part.gene_ids)
        measured_obs[var_joinids] += len(part.rows)
        presence.write(
            _coo_table(
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
            for key, values in cell_stats(counts).items():
                stats[key].append(values)
            coo = counts.tocoo()
            rows = (coo.row + written).astype(np.int64)
            cols = var_joinids[coo.col].astype(np.int64)
            values = census_normalized(counts, part, block_rows)
            order = _global_order(rows, cols, tiles)
            rows, cols = rows[order], cols[order]
            raw.write(_coo_table(rows, cols, coo.data[order].astype(np.float32)), platform_config=SORTED)
            normalized.write(_coo_table(rows, cols, values[order]), platform_config=SORTED)
            gene_nnz += np.bincount(cols, minlength=len(gene_nnz))
            written += len(block_rows)
            log.info(
                "%s: %s, %d of %d cells",
                name,
                part.source.dataset_id,
                written - offset,
                len(part.rows),
            )
        obs = part.obs.copy()
        for key, values in stats.items():
            obs[key] = np.concatenate(values) if values else np.array([], dtype=np.float64)
        obs["n_measured_vars"] = len(part.gene_ids)
        obs_parts.append(obs)
        offset += len(part.rows)
    for array in (raw, normalized, presence):
        array.close()
    obs = _census_obs(pd.concat(obs_parts) if obs_parts else pd.DataFrame())
    _add_dataframe(experiment, "obs", _table(obs, CATEGORICAL_OBS))
    var = var_info.reset_index(names="feature_id")
    var["nnz"] = gene_nnz
    var["n_measured_obs"] = measured_obs
    _add_dataframe(measurement, "var", _table(var))
    experiment.close()
    return obs


def census_normalized(counts: sp.csr_matrix, part: _Included, block_rows: np.ndarray) -> np.ndarray:
    """A block's `normalized` values as the builder stores them, in the order of `counts.tocoo()`: rounded to
    15 mantissa bits (half to even), a value rounded to zero kept as the smallest float32."""
    full_gene = part.full_gene[np.searchsorted(part.rows, block_rows)]
    scaled = length_scaled(counts, part.genes["feature_length"].to_numpy(), full_gene)
    values = normalized(scaled, row_sums(scaled))
    rounded = _round_half_to_even(values.tocoo().data, KEPT_MANTISSA_BITS)
    rounded[rounded == 0] = np.finfo(np.float32).smallest_subnormal
    return rounded


def _round_half_to_even(values: np.ndarray, keep_bits: int) -> np.ndarray:
    """float32 values with only `keep_bits` of their 23 mantissa bits (what the Census keeps)."""
    drop = np.finfo(np.float32).nmant - keep_bits
    bits = values.astype(np.float32).view(np.int32).copy()
    bits += ((bits >> drop) & 1) + ((1 << (drop - 1)) - 1)
    bits &= ~((1 << drop) - 1)
    return bits.view(np.float32)


def _census_obs(obs: pd.DataFrame) -> pd.DataFrame:
    """The Census obs columns, in the Census order."""
    obs = ontology.with_general_tissue(obs.reset_index(drop=True))
    obs["tissue_general"] = obs["tissue_general"].astype(str)
    obs["tissue_general_ontology_term_id"] = obs["tissue_general_ontology_term_id"].astype(str)
    obs["is_primary_data"] = obs["is_primary_data"].astype(bool)
    columns = [
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
    ]
    return obs[columns]


def _summary_cell_counts(obs_by_organism: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for organism, obs in obs_by_organism.items():
        rows.append(
            {
                "organism": organism,
                "category": "all",
                "label": "na",
                "ontology_term_id": "na",
                "total_cell_count": len(obs),
                "unique_cell_count": int(obs["is_primary_data"].sum()),
            }
        )
        for category in SUMMARY_CATEGORIES:
            id_column = f"{category}_ontology_term_id" if category != "suspension_type" else category
            grouped = obs.groupby([category, id_column], observed=True)["is_primary_data"]
            for (label, term_id), primary in grouped:
                rows.append(
                    {
                        "organism": organism,
                        "category": category,
                        "label": label,
                        "ontology_term_id": term_id if category != "suspension_type" else "na",
                        "total_cell_count": len(primary),
                        "unique_cell_count": int(primary.sum()),
                    }
                )
    return pd.DataFrame(rows)


def build_census(
    sources: list[SourceDataset], uri: str | Path, census_version: str, release: CensusRelease
) -> dict:
    """Write the store at `uri` atomically, as the builder of `release` does; returns the summary (cell
    counts per organism)."""
    included_by_experiment: dict[str, list[_Included]] = defaultdict(list)
    organism_labels: dict[str, str] = {}
    for joinid, source in enumerate(sources):
        for included in _parts(source, joinid, release):
            included_by_experiment[included.experiment].append(included)
            organism_labels[included.experiment] = included.organism_label
    with atomic_path(uri) as tmp:
        root = soma.Collection.create(str(tmp))
        root.metadata["created_on"] = date.today().isoformat()
        root.metadata["git_commit_sha"] = "cellquery-demo"
        census_data = root.add_new_collection("census_data")
        obs_by_organism = {
            organism_labels[name]: _write_experiment(census_data, name, parts, len(sources))
            for name, parts in sorted(included_by_experiment.items())
        }
        census_data.close()
        _write_census_info(root, sources, obs_by_organism, organism_labels, census_version, release)
        root.close()
    total = sum(len(obs) for obs in obs_by_organism.values())
    unique = sum(int(obs["is_primary_data"].sum()) for obs in obs_by_organism.values())
    return {
        "census_version": census_version,
        "datasets": len(sources),
        "total_cell_count": total,
        "unique_cell_count": unique,
        "cells_per_organism": {k: len(v) for k, v in obs_by_organism.items()},
    }


def _write_census_info(root, sources, obs_by_organism, organism_labels, census_version, release) -> None:
    info = root.add_new_collection("census_info")
    total = sum(len(obs) for obs in obs_by_organism.values())
    unique = sum(int(obs["is_primary_data"].sum()) for obs in obs_by_organism.values())
    summary = pd.DataFrame(
        {
            "label": [
                "census_schema_version",
                "census_build_date",
                "dataset_schema_version",
                "total_cell_count",
                "unique_cell_count",
            ],
            "value": [release.census_schema, census_version, release.dataset_schema, total, unique],
        }
    ).astype(str)
    all_obs = pd.concat(obs_by_organism.values())
    cell_counts = all_obs["dataset_id"].astype(str).value_counts()
    datasets = pd.DataFrame(
        {
            "citation": [f"cellquery demo: {s.title}" for s in sources],
            "collection_id": [s.collection_id for s in sources],
            "collection_name": [s.collection_name for s in sources],
            "collection_doi": "",
            "collection_doi_label": "",
            "dataset_id": [s.dataset_id for s in sources],
            "dataset_version_id": [s.dataset_version_id for s in sources],
            "dataset_title": [s.title for s in sources],
            "dataset_h5ad_path": [f"{s.dataset_id}.h5ad" for s in sources],
            "dataset_total_cell_count": [int(cell_counts.get(s.dataset_id, 0)) for s in sources],
        }
    )
    organism_ids = {scientific: term for term, (_, scientific) in ontology.ORGANISMS.items()}
    organisms = pd.DataFrame(
        {
            "organism_ontology_term_id": [organism_ids[label] for label in organism_labels.values()],
            "organism_label": list(organism_labels.values()),
            "organism": list(organism_labels.keys()),
        }
    )
    _add_dataframe(info, "summary", _table(summary))
    _add_dataframe(info, "datasets", _table(datasets))
    _add_dataframe(info, "summary_cell_counts", _table(_summary_cell_counts(obs_by_organism)))
    _add_dataframe(info, "organisms", _table(organisms))
    info.close()
