"""A version's store made from the previous version's without rebuilding it: its files hard-linked (shared,
never rewritten: TileDB adds files, it does not change them), the fragments holding the cells of datasets
gone or replaced dropped, the new datasets' cells appended after the others, var's counts and `census_info`
written anew. Only the new datasets' h5ads are read, and only what a dropped dataset contributed is read back
from the store. The Census builder rebuilds every release; soma_joinids then have gaps where datasets left."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import tiledbsoma as soma

from cellquery.cellxgene import ontology
from cellquery.cellxgene.release import CensusRelease
from cellquery.files.atomic import atomic_path, write_json
from cellquery.store.build import BUILDER, FRAGMENTS, census_summary, validated
from cellquery.store.census_info import write_census_info
from cellquery.store.experiment import (
    PRESENCE,
    append_to_experiment,
    array_uris,
    read_obs,
    read_var,
    write_experiment,
)
from cellquery.store.sources import Included, SourceDataset, included_parts

log = logging.getLogger(__name__)


def extend_census(
    previous: Path, sources: list[SourceDataset], uri: Path, census_version: str, release: CensusRelease
) -> dict:
    """Write the store of `sources` at `uri` (atomically, validated) from the store at `previous`; returns
    its summary, and what was reused, dropped and added."""
    with atomic_path(uri) as staging:
        shutil.copytree(previous, staging, copy_function=os.link)
        book = json.loads((staging / FRAGMENTS).read_text())
        held = _held_datasets(staging)
        current = {s.dataset_id: s for s in sources}
        kept = {
            d for d, (version, _) in held.items() if d in current and current[d].dataset_version_id == version
        }
        joinids = {d: held[d][1] for d in kept}
        next_joinid = max((j for _, j in held.values()), default=-1) + 1
        added = [s for s in sources if s.dataset_id not in kept]
        parts: dict[str, list[Included]] = defaultdict(list)
        for number, source in enumerate(added, start=next_joinid):
            joinids[source.dataset_id] = number
            for part in included_parts(source, number, release):
                parts[part.experiment].append(part)
        root_uri = str(staging)
        for name in sorted(set(book) | set(parts)):
            held_here, new_parts = book.get(name, {}), parts.get(name, [])
            dropped = {d: record for d, record in held_here.items() if d not in kept}
            still = {d: record for d, record in held_here.items() if d in kept}
            book[name] = still | _changed_experiment(root_uri, name, dropped, new_parts)
            log.info(
                "%s: %d datasets kept, %d dropped, %d added", name, len(still), len(dropped), len(new_parts)
            )
        obs_by_organism, labels = _experiments_obs(root_uri, book, release)
        ordered = sorted(sources, key=lambda s: joinids[s.dataset_id])
        _rewrite_census_info(
            staging,
            ordered,
            obs_by_organism,
            labels,
            census_version,
            release,
            [joinids[s.dataset_id] for s in ordered],
        )
        write_json(staging / FRAGMENTS, book)
        chosen = {
            name: sum(r["cells"][1] - r["cells"][0] for r in records.values())
            for name, records in book.items()
        }
        validated(staging, uri, census_version, chosen)
    summary = census_summary(census_version, len(sources), obs_by_organism)
    return summary | {
        "reused": sorted(kept),
        "dropped": sorted(set(held) - kept),
        "added": [s.dataset_id for s in added],
    }


def _held_datasets(store: Path) -> dict[str, tuple[str, int]]:
    """The previous store's datasets: their version ids and soma_joinids."""
    with soma.DataFrame.open(f"{store}/census_info/datasets") as frame:
        table = (
            frame.read(column_names=["soma_joinid", "dataset_id", "dataset_version_id"]).concat().to_pandas()
        )
    return {row.dataset_id: (row.dataset_version_id, int(row.soma_joinid)) for row in table.itertuples()}


def _changed_experiment(root_uri: str, name: str, dropped: dict[str, dict], parts: list[Included]) -> dict:
    """An experiment without the dropped datasets' cells and with the new parts'; a new organism's made."""
    uri = f"{root_uri}/census_data/{name}"
    if not Path(uri).exists():
        with soma.Collection.open(f"{root_uri}/census_data", "w") as census_data:
            n_datasets = max(p.dataset_joinid for p in parts) + 1
            return write_experiment(census_data, name, parts, n_datasets)
    var = read_var(uri)
    for dataset, record in dropped.items():
        _drop(uri, dataset, record, var)
    return append_to_experiment(uri, parts, var)


def _drop(uri: str, dataset: str, record: dict, var: pd.DataFrame) -> None:
    """Take a dataset's counts out of `var`, then its fragments out of every array."""
    arrays = array_uris(uri)
    start, end = record["cells"]
    with soma.SparseNDArray.open(arrays["X/raw"]) as raw:
        genes = raw.read(coords=(slice(start, end - 1),)).tables().concat()["soma_dim_1"].to_numpy()
    with soma.SparseNDArray.open(arrays[PRESENCE]) as presence:
        row = record["dataset_joinid"]
        measured = presence.read(coords=(slice(row, row),)).tables().concat()["soma_dim_1"].to_numpy()
    var.iloc[:, var.columns.get_loc("nnz")] -= np.bincount(genes, minlength=len(var))
    var.iloc[measured, var.columns.get_loc("n_measured_obs")] -= end - start
    for key, names in record["fragments"].items():
        folder = Path(arrays[key].removeprefix("file://"))
        for fragment in names:
            shutil.rmtree(folder / "__fragments" / fragment)
            (folder / "__commits" / f"{fragment}.wrt").unlink()
    log.info("%s: dropped %s (%d cells)", Path(uri).name, dataset, end - start)


def _experiments_obs(root_uri: str, book: dict, release: CensusRelease) -> tuple[dict, dict]:
    """Each experiment's obs as stored now, by organism label; the labels by experiment."""
    labels = {name: ontology.label(release.experiments[name]) for name in book}
    return {labels[name]: read_obs(f"{root_uri}/census_data/{name}") for name in book}, labels


def _rewrite_census_info(
    staging: Path, sources, obs_by_organism, labels, census_version, release, joinids
) -> None:
    """`census_info` written anew (its tables are small: they describe every dataset and label)."""
    shutil.rmtree(staging / "census_info")
    with soma.Collection.open(str(staging), "d") as root:
        del root["census_info"]
    with soma.Collection.open(str(staging), "w") as root:
        root.metadata["created_on"] = date.today().isoformat()
        root.metadata["git_commit_sha"] = BUILDER
        write_census_info(root, sources, obs_by_organism, labels, census_version, release, joinids)
