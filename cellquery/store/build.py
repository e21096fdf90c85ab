"""Build a Census-shaped TileDB-SOMA store from CELLxGENE h5ads, as the Census builder of a release does.

The release's inclusion rules apply: cells with tissue_type tissue or organoid and an RNA assay of its
allow-list, the organism of the file (schema 7) or of each cell (schema 5); genes with biotype "gene" of that
organism; raw counts from raw.X when present, else X; duplicate cells kept and flagged by `is_primary_data`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date
from pathlib import Path

import pandas as pd
import tiledbsoma as soma

from cellquery.cellxgene.release import CensusRelease
from cellquery.errors import ValidationFailed
from cellquery.files.atomic import atomic_path, write_json
from cellquery.store.census_info import cell_totals, write_census_info
from cellquery.store.experiment import read_obs, write_experiment
from cellquery.store.sources import Included, SourceDataset, included_parts
from cellquery.store.validate import store_problems

log = logging.getLogger(__name__)

BUILDER = "cellquery"  # the store's `git_commit_sha`: what built it
FRAGMENTS = "fragments.json"  # per experiment and dataset: its cells' fragments (what a later version drops)


def build_census(
    sources: list[SourceDataset], uri: str | Path, census_version: str, release: CensusRelease
) -> dict:
    """Write the store at `uri` atomically (present only once validated); returns its summary (cell counts
    per organism)."""
    # 1. what each dataset contributes to each experiment
    parts_by_experiment: dict[str, list[Included]] = defaultdict(list)
    for joinid, source in enumerate(sources):
        for part in included_parts(source, joinid, release):
            parts_by_experiment[part.experiment].append(part)
    organism_labels = {name: parts[0].organism_label for name, parts in parts_by_experiment.items()}
    with atomic_path(uri) as staging:
        root = soma.Collection.create(str(staging))
        root.metadata["created_on"] = date.today().isoformat()
        root.metadata["git_commit_sha"] = BUILDER
        # 2. an experiment per organism
        census_data = root.add_new_collection("census_data")
        book = {
            name: write_experiment(census_data, name, parts, len(sources))
            for name, parts in sorted(parts_by_experiment.items())
        }
        obs_by_organism = {organism_labels[name]: read_obs(census_data[name].uri) for name in book}
        census_data.close()
        # 3. census_info
        write_census_info(root, sources, obs_by_organism, organism_labels, census_version, release)
        root.close()
        write_json(staging / FRAGMENTS, book)
        # 4. the validation pass
        chosen = {name: sum(len(p.rows) for p in parts) for name, parts in parts_by_experiment.items()}
        validated(staging, uri, census_version, chosen)
    return census_summary(census_version, len(sources), obs_by_organism)


def validated(staging: Path, uri, census_version: str, chosen: dict[str, int]) -> None:
    """The validation pass: each experiment holds the cells the inclusion rules chose (`chosen`, per
    experiment), the store's tables agree with its cells."""
    if problems := store_problems(str(staging), chosen):
        raise ValidationFailed("\n".join(f"census store {uri}: {problem}" for problem in problems))
    log.info("census %s: validated (%d experiments)", census_version, len(chosen))


def census_summary(census_version: str, n_datasets: int, obs_by_organism: dict[str, pd.DataFrame]) -> dict:
    """What a store's receipt states: cells per organism, in all and primary."""
    total, unique = cell_totals(obs_by_organism)
    return {
        "census_version": census_version,
        "datasets": n_datasets,
        "total_cell_count": total,
        "unique_cell_count": unique,
        "cells_per_organism": {k: len(v) for k, v in obs_by_organism.items()},
    }
