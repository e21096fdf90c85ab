"""What each dataset contributes to the store (the builder's `datasets.py` and its inclusion pass): its cells
of each experiment's organism that the release keeps (per file in schema 7, per cell in schema 5), and the
genes of that organism."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellquery.cellxgene import ontology
from cellquery.cellxgene.inclusion import included_genes
from cellquery.cellxgene.release import CensusRelease
from cellquery.files import h5ad


@dataclass(frozen=True)
class SourceDataset:
    """One h5ad going into the store, with the identifiers and the citation the Census records for it."""

    dataset_id: str
    dataset_version_id: str
    title: str
    path: Path
    collection_id: str = ""
    collection_name: str = ""
    citation: str = ""


@dataclass
class Included:
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


def included_parts(source: SourceDataset, dataset_joinid: int, release: CensusRelease) -> list[Included]:
    """What one h5ad contributes to each experiment of the release (none: the builder keeps none of it)."""
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


def _part(source, dataset_joinid, release, organism, obs, rows, var, counts_key) -> Included:
    keep_genes = included_genes(var, organism)
    obs["dataset_id"] = source.dataset_id
    # by gene id: a block's columns then go to the store's var in order (TileDB's global order in a tile)
    gene_columns = np.flatnonzero(keep_genes)
    gene_columns = gene_columns[np.argsort(var.index[gene_columns].to_numpy(), kind="stable")]
    genes = var.iloc[gene_columns][["feature_name", "feature_type", "feature_length"]]
    return Included(
        source=source,
        dataset_joinid=dataset_joinid,
        rows=rows,
        obs=obs,
        gene_columns=gene_columns,
        genes=genes.astype({"feature_name": str, "feature_type": str, "feature_length": np.int64}),
        counts_key=counts_key,
        organism_label=ontology.label(organism),
        experiment=release.experiment(organism),
        full_gene=obs["assay_ontology_term_id"].astype(str).isin(release.full_gene_assays).to_numpy(),
    )
