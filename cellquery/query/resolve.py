"""Step resolve: the spec checked against the registry, its artifacts found (backend a), how each is read."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cellquery.cellxgene.release import CensusRelease, recorded
from cellquery.errors import SourceError, SpecError
from cellquery.files.atomic import atomic_path, write_json
from cellquery.instances.source import Source
from cellquery.query.coverage import log_coverage
from cellquery.query.runfiles import MANIFEST_DIGEST, READ_PLAN, file_digest, read_manifest
from cellquery.spec.criteria import Criterion, resolve
from cellquery.spec.query_spec import Problems, QuerySpec
from cellquery.storage.settings import STORAGE_DEFAULTS
from cellquery.workflow.faults import failpoint
from cellquery.workflow.jobs import at_work

log = logging.getLogger(__name__)

RUN_VARIABLE = "CELLQUERY_RUN"  # the run a spec check belongs to: its resolve may reuse what it found


def plan_query(spec: QuerySpec, source: Source, storage: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """What `resolve` decides, checked against the registry: the resolved query and the manifest.

    Raises a `SpecError` naming every problem the registry reveals (or a `SourceError`), for a query that
    matches nothing unless the spec says `allow_empty: true`, and for genes the selected datasets do not
    measure (see `cellquery.query.coverage`). Reads no h5ad. `storage` holds the `cache_dir` and
    `object_storage` settings every job of the query uses (recorded in the resolved query).
    """
    storage = storage or STORAGE_DEFAULTS
    from cellquery.query import artifacts
    from cellquery.query.census_route import cells_per_dataset
    from cellquery.query.coverage import gene_coverage, left_out_by_join
    from cellquery.query.value_counts import value_counts
    from cellquery.spec.criteria import descendants_below
    from cellquery.spec.genes import repeated_genes

    registry = source.registry()
    at_work()
    collection, location, criteria, gene_ids = _checked_names(registry, spec, storage["object_storage"])
    table = artifacts.manifest(artifacts.artifact_query(registry, spec, collection, criteria))
    table = artifacts.with_census_datasets(table, location, storage["object_storage"])
    dataset_ids = list(table["dataset_id"])
    cells = cells_per_dataset(location, criteria, spec.organism, dataset_ids, storage["object_storage"])
    if not sum(cells.values()) and not spec.allow_empty:
        found = "no artifact" if table.empty else f"{len(table)} artifacts but no cells"
        why = excluded_by_census_rules(recorded(location), criteria)
        instead = "builds what the h5ads hold, unchecked" if why else "registers an empty result instead"
        raise SpecError(
            f"cells: the query matches {found} in {collection.key} {collection.version_tag}{why} "
            f"(allow_empty: true {instead})"
        )
    table["selected_cells"] = table["dataset_id"].map(cells).astype(int)
    per_value, warnings = value_counts(
        location, criteria, spec.organism, dataset_ids, descendants_below, storage["object_storage"]
    )
    schema = location["release"]["dataset_schema_version"]
    warnings += repeated_genes(spec.genes, spec.organism, schema) if spec.genes else []
    table = with_read_plan(table, spec, storage, location, criteria)
    if spec.sample:
        settings = storage["object_storage"]
        kept = cells_per_dataset(location, criteria, spec.organism, dataset_ids, settings, spec.sample)
        table["sampled_cells"] = table["dataset_id"].map(kept).astype(int)
    check_cache_room(table, storage)
    coverage = gene_coverage(spec, location, cells, gene_ids, storage["object_storage"])
    warnings += left_out_by_join(coverage, spec.organism, spec.gene_join)
    _check_result_columns(spec, table, storage, coverage)
    query = {
        "name": spec.name,
        "spec": spec.data,
        "spec_text": spec.path.read_text(),
        "spec_digest": spec.digest,
        "instance": registry.instance,
        "organism": spec.organism,
        "criteria": [c.as_dict() for c in criteria],
        "gene_ids": gene_ids,
        "obs_columns": spec.obs_columns,
        "author_columns": spec.author_columns,
        "gene_join": spec.gene_join,
        "layers": spec.layers,
        "sample": spec.sample,
        "output": {"formats": spec.formats, "schema": spec.schema, "hvg": spec.hvg},
        "gene_coverage": coverage,
        "storage": storage,
        "collection": {
            "key": collection.key,
            "version": collection.version_tag,
            "uid": collection.uid,
            "artifacts": collection.artifacts.count(),
        },
        "census": {**location, "cells": sum(cells.values())},
        "value_counts": per_value,
        "warnings": warnings,
    }
    return query, table


def excluded_by_census_rules(release: CensusRelease, criteria: list[Criterion]) -> str:
    """Why the census store can hold no cell of the criteria: they keep only tissue types or assays its
    inclusion rules leave out (the h5ads may hold such cells); "" when they do not."""
    rules = {"tissue_type": release.included_tissue_types, "assay_ontology_term_id": release.rna_assays}
    for criterion in criteria:
        kept = rules.get(criterion.column)
        if kept is not None and criterion.op == "in" and not set(criterion.values) & set(kept):
            named = ", ".join(map(repr, criterion.names or criterion.values))
            rule = f"the Census' inclusion rules keep no cell of {criterion.column} {named}"
            return f": {rule}, so its store holds none to check the h5ads' against"
    return ""


def _check_result_columns(spec: QuerySpec, table: pd.DataFrame, storage: dict, coverage: dict) -> None:
    """Author columns every dataset with cells holds; highly variable genes only for a result that fits."""
    from cellquery.query.author_columns import check_author_columns

    problems = Problems()
    with problems.check():
        check_author_columns(spec, table, storage)
    if spec.hvg:
        from cellquery.query.variable_genes import check_fits

        cells = table["sampled_cells" if spec.sample else "selected_cells"].sum()
        genes = coverage["in_every_dataset"] + (
            coverage["in_some_datasets"] if spec.gene_join == "outer" else 0
        )
        with problems.check():
            check_fits(int(cells), int(genes))
    problems.raise_any()


def with_read_plan(
    table: pd.DataFrame, spec: QuerySpec, storage: dict, location: dict, criteria: list[Criterion]
) -> pd.DataFrame:
    """Per artifact, how it is read: `local` (in place), `cache` (downloaded) or `stream` (byte ranges),
    with the bytes a download and a stream would move (`download_bytes` is 0 for a copy already cached)
    and the bytes the chosen way moves (`to_fetch`). `auto` picks the cheaper
    (`cellquery.storage.streaming`)."""
    from cellquery.query.artifacts import cached_path
    from cellquery.query.census_route import selected_positions
    from cellquery.spec.query_spec import CELL_STATS
    from cellquery.storage.settings import is_remote

    table = table.copy()
    remote = table["path"].map(is_remote)
    table["fetch"], table["download_bytes"], table["stream_bytes"] = "local", 0, 0
    if remote.any():
        mode = spec.fetch or storage["fetch"]
        datasets = list(table.loc[remote, "dataset_id"])
        positions = selected_positions(location, criteria, spec.organism, datasets, storage["object_storage"])
        every_row = any(c.column in CELL_STATS for c in criteria)  # per-cell statistics read all counts
        for index in table.index[remote]:
            entry = table.loc[index]
            where = None if every_row else positions[entry["dataset_id"]]
            table.loc[index, READ_PLAN] = _remote_read(entry, mode, cached_path(entry, storage), where)
    table["to_fetch"] = table["download_bytes"].where(table["fetch"] == "cache", table["stream_bytes"])
    return table


def _remote_read(entry, mode: str, cached: Path, positions: np.ndarray | None) -> tuple[str, int, int]:
    """(mode, download bytes, stream bytes) of one artifact in object storage; `positions` None: all rows."""
    from cellquery.storage.streaming import choose, estimated_stream_bytes

    size, n_obs = int(entry["size"]), int(entry["n_obs"])
    download = 0 if cached.exists() and cached.stat().st_size == size else size
    if positions is None:
        positions = np.linspace(0, 1, n_obs, endpoint=False)
    stream = estimated_stream_bytes(size, n_obs, positions)
    return choose(mode, download, stream), download, stream


def check_cache_room(table: pd.DataFrame, storage: dict) -> None:
    """Stop before any download when the downloads would not leave `cache_headroom_gb` free on the cache's
    disk (one line naming the directory and the numbers)."""
    import shutil

    from cellquery.query.artifacts import cache_dir

    needed = int(table.loc[table["fetch"] == "cache", "download_bytes"].sum())
    if not needed:
        return
    directory = cache_dir(storage)
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    free, headroom = shutil.disk_usage(existing).free, storage["cache_headroom_gb"] * 1e9
    if needed + headroom > free:
        raise SpecError(
            f"cache_dir: the run downloads {needed / 1e9:.2f} GB into {directory}, whose disk has "
            f"{free / 1e9:.2f} GB free and must keep {headroom / 1e9:g} GB (cache_headroom_gb); "
            "set cache_dir to a larger disk, or fetch: stream"
        )


def _checked_names(ln, spec: QuerySpec, settings: dict) -> tuple:
    """Collection, census store (its location, with its release), resolved criteria and gene ids (in the
    gene reference of the store's release); every name the registry or the store lacks, reported."""
    from cellquery.cellxgene.release import check_spec
    from cellquery.query import artifacts
    from cellquery.query.census_route import store_release, where
    from cellquery.query.registration import check_output_key
    from cellquery.spec.genes import resolve_genes

    problems, found = Problems(), {}
    checks = {
        "collection": lambda: artifacts.collection_for(ln, spec),
        "criteria": lambda: resolve(spec),
        # the source's keys reach the target with its inputs: a result must not take one (the target's own
        # holders are asked again in register)
        "output key": lambda: check_output_key(ln, spec),
        "users": lambda: artifacts.check_users(ln, spec),
    }
    for name, check in checks.items():
        with problems.check():
            found[name] = check()
    release = None
    if "collection" in found:
        with problems.check():
            location = artifacts.store_location(artifacts.census_store(ln, spec, found["collection"]))
            release, experiments = store_release(location, settings)
            found["store"] = {**location, "release": release.identity}
            check_spec(release, experiments, where(location), spec.organism, spec.cells)
    with problems.check():
        schema = release.dataset_schema if release else None
        found["genes"] = resolve_genes(spec.genes, spec.organism, schema) if spec.genes else None
    problems.raise_any()
    return found["collection"], found["store"], found["criteria"], found["genes"]


def resolve_query(
    spec: QuerySpec, source: Source, storage: dict, query_out: Path, manifest_out: Path, checked: Path
) -> None:
    """Resolve names against the registry, find the artifacts (backend a), and write the manifest; when this
    run's spec check did so already (`checked`), write what it found instead of asking the registry again."""
    found = checked_this_run(checked, spec, source, storage)
    if found:
        at_work()
        query, table = found
        log.info("the spec check of this run resolved the query: the registry is not asked again")
    else:
        try:
            query, table = plan_query(spec, source, storage)
        except SpecError as error:
            raise error.within(str(spec.path)) from None
    with atomic_path(manifest_out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    failpoint("resolve")  # one output of the checkpoint written, the other not
    write_json(query_out, query | {MANIFEST_DIGEST: file_digest(manifest_out)})
    collection = query["collection"]
    log.info(
        "%d of %d artifacts in %s %s match; %d cells in census store %s",
        len(table),
        collection["artifacts"],
        collection["key"],
        collection["version"],
        query["census"]["cells"],
        query["census"]["key"],
    )
    log_coverage(query["gene_coverage"], spec.organism, spec.gene_join)
    from cellquery.query.value_counts import describe_values

    for line in describe_values(query.get("value_counts", [])):
        log.info("%s", line)
    for warning in query.get("warnings", []):
        log.warning("%s", warning)
    checked.unlink(missing_ok=True)


def keep_checked(found: tuple[dict, pd.DataFrame], spec: QuerySpec, source: Source, out: Path) -> None:
    """Keep what the spec check found for this run's `resolve` (the run: `RUN_VARIABLE`, set at parse)."""
    query, table = found
    manifest = table.to_csv(sep="\t", index=False)
    write_json(out, {"basis": _basis(source), "query": query, "manifest": manifest})


def checked_this_run(
    path: Path, spec: QuerySpec, source: Source, storage: dict
) -> tuple[dict, pd.DataFrame] | None:
    """What this run's spec check found for this spec and storage, unless the demo was rebuilt since."""
    if not path.exists() or RUN_VARIABLE not in os.environ:
        return None
    checked = json.loads(path.read_text())
    query = checked["query"]
    same = (checked["basis"], query["spec_digest"], query["storage"]) == (
        _basis(source),
        spec.digest,
        storage,
    )
    return (query, read_manifest(io.StringIO(checked["manifest"]))) if same else None


def _basis(source: Source) -> list:
    """What a check's findings hold for: this run and, for the demo, the build of it the check saw."""
    return [os.environ.get(RUN_VARIABLE), source.built_at()]


def one_read_plan(checked: list[tuple[dict, pd.DataFrame]]) -> None:
    """How a build reads an artifact several of its queries want (`fetch: auto`), decided once, in their
    tables: downloaded for all when one of them downloads it or their streams together would move more than
    `streaming.choose` allows against one download (the copy is shared); else each streams its rows."""
    from cellquery.storage.streaming import choose

    auto = [table for query, table in checked if fetch_mode(query) == "auto"]
    remote = [table.loc[table["fetch"] != "local", ["uid", *READ_PLAN]] for table in auto]
    reads = pd.concat(remote) if remote else pd.DataFrame(columns=["uid", *READ_PLAN])
    for uid, wanted in reads.groupby("uid"):
        if len(wanted) < 2:
            continue
        streams = int(wanted.loc[wanted["fetch"] == "stream", "stream_bytes"].sum())
        downloaded = (wanted["fetch"] == "cache").any()
        how = "cache" if downloaded else choose("auto", int(wanted["download_bytes"].max()), streams)
        moved = "download_bytes" if how == "cache" else "stream_bytes"
        for table in auto:
            rows = table["uid"] == uid
            table.loc[rows, "fetch"] = how
            table.loc[rows, "to_fetch"] = table.loc[rows, moved]


def fetch_mode(query: dict) -> str:
    """How a resolved query reads artifacts in object storage: its spec's `fetch`, else the config's."""
    return query["spec"].get("fetch") or query["storage"]["fetch"]


def check_build_cache_room(tables: list[pd.DataFrame], storage: dict) -> None:
    """The cache room for the whole build: an artifact several queries download counts once."""
    if tables:
        check_cache_room(pd.concat(tables).drop_duplicates("uid"), storage)


def preflight(spec: QuerySpec, source: Source, storage: dict) -> tuple[dict, pd.DataFrame]:
    """Run `resolve`'s registry checks before any job: a bad spec stops with one line naming the file.
    Returns what `resolve` would write (`keep_checked` keeps it for this run's `resolve`)."""
    try:
        return plan_query(spec, source, storage)
    except SpecError as error:
        raise error.within(str(spec.path)) from None
    except SourceError as error:
        raise SpecError(f"{spec.path}: {error}") from None
