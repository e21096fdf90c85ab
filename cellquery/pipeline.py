"""The query pipeline's steps, one function per Snakemake rule (see `rules/query.smk`)."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from cellquery.atomic import atomic_path, write_json
from cellquery.coverage import log_coverage
from cellquery.criteria import Criterion, resolve
from cellquery.faults import failpoint
from cellquery.fetch import artifact_lock
from cellquery.jobs import echo
from cellquery.lamin import DemoInstance
from cellquery.layout import QueryFiles, slice_path
from cellquery.spec import Problems, QuerySpec, SpecError
from cellquery.storage import STORAGE_DEFAULTS

log = logging.getLogger(__name__)

# The shape of query.json and manifest.tsv: a `resolve` param, so a cellquery that changes it re-resolves.
RESOLVED_FORMAT = 4
MAX_AUTO_SHARD = 100
AUTO_SHARDS = 8
MIN_SHARD_BYTES = 2**29
MAX_SHARD_BYTES = 2**33
FETCH_THREADS = 2  # downloads per shard job, overlapping its slicing
READ_PLAN = ["fetch", "download_bytes", "stream_bytes"]  # manifest columns: how each artifact is read


def read_query(path: Path) -> dict:
    """The resolved query written by `resolve`: criteria, gene ids, collection and census store."""
    return json.loads(Path(path).read_text())


def criteria_of(query: dict) -> list[Criterion]:
    return [Criterion.from_dict(c) for c in query["criteria"]]


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"version": str}, keep_default_na=False)


def plan_query(spec: QuerySpec, demo: DemoInstance, storage: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """What `resolve` decides, checked against the registry: the resolved query and the manifest.

    Raises a `SpecError` naming every problem the registry reveals (or a `SourceError`), for a query that
    matches nothing unless the spec says `allow_empty: true`, and for genes the selected datasets do not
    measure (see `cellquery.coverage`). Reads no h5ad. `storage` holds the `cache_dir` and
    `object_storage` settings every job of the query uses (recorded in the resolved query).
    """
    storage = storage or STORAGE_DEFAULTS
    from cellquery import registry
    from cellquery.census import cells_per_dataset
    from cellquery.coverage import gene_coverage

    ln = registry.connect_source(spec, demo)
    collection, store, criteria, gene_ids = _checked_names(ln, spec)
    table = registry.manifest(registry.artifact_query(ln, spec, collection, criteria))
    dataset_ids = list(table["dataset_id"])
    location = registry.store_location(store)
    cells = cells_per_dataset(location, criteria, spec.organism, dataset_ids, storage["object_storage"])
    if not sum(cells.values()) and not spec.allow_empty:
        found = "no artifact" if table.empty else f"{len(table)} artifacts but no cells"
        raise SpecError(
            f"cells: the query matches {found} in {collection.key} {collection.version_tag} "
            "(allow_empty: true registers an empty result instead)"
        )
    table["selected_cells"] = table["dataset_id"].map(cells).astype(int)
    table = with_read_plan(table, spec, storage, location, criteria)
    check_cache_room(table, storage)
    query = {
        "name": spec.name,
        "spec": spec.data,
        "spec_digest": spec.digest,
        "organism": spec.organism,
        "criteria": [c.as_dict() for c in criteria],
        "gene_ids": gene_ids,
        "obs_columns": spec.obs_columns,
        "gene_join": spec.gene_join,
        "gene_coverage": gene_coverage(spec, location, cells, gene_ids, storage["object_storage"]),
        "storage": storage,
        "collection": {
            "key": collection.key,
            "version": collection.version_tag,
            "uid": collection.uid,
            "artifacts": collection.artifacts.count(),
        },
        "census": {**location, "cells": sum(cells.values())},
    }
    return query, table


def with_read_plan(
    table: pd.DataFrame, spec: QuerySpec, storage: dict, location: dict, criteria: list[Criterion]
) -> pd.DataFrame:
    """Per artifact, how it is read: `local` (in place), `cache` (downloaded) or `stream` (byte ranges),
    with the bytes a download and a stream would move (`download_bytes` is 0 for a copy already cached)
    and the bytes the chosen way moves (`to_fetch`). `auto` picks the cheaper (`cellquery.streaming`)."""
    from cellquery.census import selected_positions
    from cellquery.registry import cached_path
    from cellquery.spec import CELL_STATS
    from cellquery.storage import is_remote

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
    from cellquery.streaming import choose, estimated_stream_bytes

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

    from cellquery.registry import cache_dir

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


def _checked_names(ln, spec: QuerySpec) -> tuple:
    """Collection, census store, resolved criteria and gene ids; every name the registry lacks, reported."""
    from cellquery import registry
    from cellquery.genes import resolve_genes
    from cellquery.register import check_output_key

    problems, found = Problems(), {}
    checks = {
        "collection": lambda: registry.collection_for(ln, spec),
        "criteria": lambda: resolve(spec),
        "genes": lambda: resolve_genes(spec.genes, spec.organism) if spec.genes else None,
        "output key": lambda: check_output_key(ln, spec),
        "users": lambda: registry.check_users(ln, spec),
    }
    for name, check in checks.items():
        with problems.check():
            found[name] = check()
    if "collection" in found:
        with problems.check():
            found["store"] = registry.census_store(ln, spec, found["collection"])
    problems.raise_any()
    return found["collection"], found["store"], found["criteria"], found["genes"]


def resolve_query(
    spec: QuerySpec, demo: DemoInstance, storage: dict, query_out: Path, manifest_out: Path
) -> None:
    """Resolve names against the registry, find the artifacts (backend a), and write the manifest."""
    query, table = plan_query(spec, demo, storage)
    with atomic_path(manifest_out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    write_json(query_out, query)
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


def write_plan(query_path: Path, manifest_path: Path, out: Path) -> str:
    """What a run will read and the cells and genes it will hold; written as TSV, returned as text.

    Reads no h5ad: sizes and cell counts come from the registry (`n_obs`: all cells of the file) and from
    the census store (`selected_cells`: the cells the query selects, after the Census inclusion rules).
    """
    from cellquery.coverage import describe as describe_coverage

    query, table = read_query(query_path), read_manifest(manifest_path)
    table = _with_current_slices(table, query)
    columns = ["dataset_id", "title", "key", "uid", "size", "n_obs", "selected_cells", *READ_PLAN, "to_fetch"]
    plan = table[columns]
    with atomic_path(out) as tmp:
        plan.to_csv(tmp, sep="\t", index=False)
    collection = query["collection"]
    lines = [
        f"plan for {query['name']}: {len(plan)} datasets of {collection['key']} {collection['version']}",
        f"  {'dataset':<44} {'dataset id':<36} {'MB':>8} {'cells in file':>13} {'cells selected':>14}",
        *(
            f"  {_clip(row.title, 44):<44} {row.dataset_id:<36} {row.size / 1e6:>8.1f} {row.n_obs:>13,} "
            f"{row.selected_cells:>14,}"
            for row in plan.itertuples()
        ),
        f"  {'total':<81} {plan['size'].sum() / 1e6:>8.1f} {plan['n_obs'].sum():>13,} "
        f"{plan['selected_cells'].sum():>14,}",
        *_read_plan_lines(plan, query),
        *(
            f"  {line}"
            for line in describe_coverage(query["gene_coverage"], query["organism"], query["gene_join"])
        ),
    ]
    return "\n".join(lines)


def _with_current_slices(table: pd.DataFrame, query: dict) -> pd.DataFrame:
    """An artifact in object storage whose slice is already made is not read again: `sliced`, 0 bytes."""
    digest = QuerySpec(Path(query["name"]), query["spec"]).cells_digest
    remote = table["fetch"] != "local"
    current = remote & table["uid"].map(lambda uid: _slice_is_current(slice_path(digest, uid), uid, digest))
    table.loc[current, "fetch"] = "sliced"
    table.loc[current, ["download_bytes", "stream_bytes", "to_fetch"]] = 0
    return table


def _read_plan_lines(plan: pd.DataFrame, query: dict) -> list[str]:
    """How the artifacts in object storage are read, with the bytes each way would move."""
    remote = plan[plan["fetch"] != "local"]
    total = f"  to fetch: {plan['to_fetch'].sum() / 1e6:.1f} MB"
    if remote.empty:
        return [f"{total} (files in local storage are read in place)"]
    mode = query["spec"].get("fetch") or query["storage"]["fetch"]
    return [
        f"  read from object storage (fetch: {mode}; download MB is 0 for a copy already cached, "
        "sliced: the slice is made, nothing is read):",
        f"  {'dataset':<44} {'read':>6} {'download MB':>12} {'stream MB':>10}",
        *(
            f"  {_clip(row.title, 44):<44} {row.fetch:>6} {row.download_bytes / 1e6:>12.1f} "
            f"{row.stream_bytes / 1e6:>10.1f}"
            for row in remote.itertuples()
        ),
        f"{total} (stream MB: estimated)",
    ]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def preflight(spec: QuerySpec, demo: DemoInstance, storage: dict) -> None:
    """Run `resolve`'s registry checks before any job: a bad spec stops with one line naming the file."""
    from cellquery.registry import SourceError

    try:
        plan_query(spec, demo, storage)
    except SpecError as error:
        raise error.within(str(spec.path)) from None
    except SourceError as error:
        raise SpecError(f"{spec.path}: {error}") from None


def plan_shards(manifest: pd.DataFrame, setting: str | int) -> list[list[str]]:
    """Artifact uids per shard job, in manifest order: `setting` artifacts each, or `auto`.

    Auto fills shards up to a byte budget (an eighth of the total, kept between 512 MiB and 8 GiB) and
    at most 100 artifacts, so small files share a job start and large ones spread over cores. The plan
    depends on the manifest alone: cluster jobs re-plan the workflow and must find the same shards.
    """
    uids = list(manifest["uid"])
    if setting != "auto":
        size = int(setting)
        return [uids[i : i + size] for i in range(0, len(uids), size)]
    budget = min(MAX_SHARD_BYTES, max(MIN_SHARD_BYTES, int(manifest["size"].sum()) // AUTO_SHARDS))
    plan, used = [[]], 0
    for uid, size in zip(uids, manifest["size"], strict=True):
        if plan[-1] and (used + size > budget or len(plan[-1]) == MAX_AUTO_SHARD):
            plan.append([])
            used = 0
        plan[-1].append(uid)
        used += int(size)
    return plan if uids else []


def _slice_is_current(path: Path, uid: str, cells_digest: str) -> bool:
    """A slice written for this artifact and these cell criteria is reused, not recomputed."""
    import anndata as ad
    import h5py

    if not path.exists():
        return False
    with h5py.File(path, "r") as f:
        source = ad.io.read_elem(f["uns/source"]) if "uns/source" in f else {}
    return source.get("uid") == uid and source.get("cells_digest") == cells_digest


def process_shard(
    spec: QuerySpec, demo: DemoInstance, query_path: Path, manifest_path: Path, uids, out: Path
):
    """Fetch (hash-checked) and slice each artifact of one shard; a current slice is kept as it is.

    Files in object storage are downloaded by FETCH_THREADS threads while the files already here are
    sliced, in manifest order. Slices are shared by every query asking the same of an artifact
    (`layout.slice_path`); a lock per slice makes it once when two queries' jobs want it at once.
    """
    query = read_query(query_path)
    table = read_manifest(manifest_path).set_index("uid", drop=False)
    files = QueryFiles(spec.name)
    if spec.instance == "demo":  # lamindb_setup, imported to hash files, must not fall back to ~/.lamin
        os.environ.update(demo.env())
    slices = {uid: slice_path(spec.cells_digest, uid) for uid in uids}
    current = {uid for uid in uids if _slice_is_current(slices[uid], uid, spec.cells_digest)}
    for uid in current:
        log.info("artifact %s: slice is current", uid)
    todo = [uid for uid in uids if uid not in current]
    streamed = {uid for uid in todo if table.loc[uid, "fetch"] == "stream"}
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        downloads = [uid for uid in todo if uid not in streamed]
        copies = {uid: pool.submit(_fetched, table.loc[uid], query["storage"]) for uid in downloads}
        for number, uid in enumerate(todo, start=1):
            with artifact_lock(slices[uid]):  # another query's job may be making the same slice
                if _slice_is_current(slices[uid], uid, spec.cells_digest):
                    log.info("artifact %s: slice made meanwhile by another job", uid)
                    continue
                try:
                    if uid in streamed:
                        _streamed_slice(query, spec, table.loc[uid], files, slices[uid])
                    else:
                        source = copies[uid].result()
                        _slice(query, spec, table.loc[uid], source, files, slices[uid], {"path": str(source)})
                except SystemExit:
                    pool.shutdown(cancel_futures=True)
                    raise
            log.info("artifact %s sliced [%d/%d]", uid, number, len(todo))
    write_json(out, {"uids": list(uids), "slices": [str(slices[uid]) for uid in uids]})


@contextmanager
def _one_line_failure():
    """An artifact that cannot be read intact stops the job with one line naming it."""
    from cellquery.fetch import FetchError
    from cellquery.registry import SourceError

    try:
        yield
    except (SourceError, FetchError) as error:
        echo(f"cellquery: {error}")
        raise SystemExit(str(error)) from None


def _fetched(entry, settings: dict) -> Path:
    """The artifact's file, intact (a damaged file never reaches a slice)."""
    from cellquery import registry

    with _one_line_failure():
        return registry.fetch(entry, settings)


def _streamed_slice(query: dict, spec: QuerySpec, entry, files: QueryFiles, out: Path) -> None:
    """Slice an artifact in object storage from the byte ranges the slice needs (`cellquery.streaming`)."""
    from cellquery.registry import remote_path
    from cellquery.storage import filesystem
    from cellquery.streaming import streamed

    def read(handle) -> None:
        check_size(handle.size, entry)
        _slice(query, spec, entry, handle, files, out, {"path": entry["path"], "fetch": "stream"})

    fs = filesystem(entry["storage_root"], query["storage"]["object_storage"])
    with _one_line_failure():
        _, moved = streamed(read, fs, remote_path(entry), f"artifact {entry['uid']} ({entry['key']})")
    receipt = files.read_receipt(entry["uid"])
    write_json(receipt, {**json.loads(receipt.read_text()), "bytes_moved": moved})


def check_size(size: int, entry) -> None:
    """A streamed file is checked by size (its hash would need the whole file); its slice is validated."""
    from cellquery.fetch import FetchError

    if size != int(entry["size"]):
        raise FetchError(
            f"artifact {entry['uid']} ({entry['key']}): {entry['path']} holds {size} bytes, "
            f"the registry {entry['size']}"
        )


def _slice(query: dict, spec: QuerySpec, entry, source, files: QueryFiles, out: Path, receipt: dict) -> None:
    from cellquery.slicing import slice_dataset

    uid = entry["uid"]
    write_json(files.read_receipt(uid), {"uid": uid, **receipt})
    slice_dataset(
        source,
        criteria_of(query),
        dataset_id=entry["dataset_id"],
        organism=query["organism"],
        obs_columns=query["obs_columns"],
        gene_ids=query["gene_ids"],
        out=out,
        provenance={"uid": uid, "cells_digest": spec.cells_digest},
    )


def census_route(query_path: Path, manifest_path: Path, out: Path) -> None:
    from cellquery.census import census_slice

    query = read_query(query_path)
    census_slice(
        query["census"],
        criteria_of(query),
        organism=query["organism"],
        dataset_ids=list(read_manifest(manifest_path)["dataset_id"]),
        obs_columns=query["obs_columns"],
        gene_ids=query["gene_ids"],
        out=out,
        settings=query["storage"]["object_storage"],
    )


def assemble(
    shards: list[Path],
    census: Path,
    query_path: Path,
    manifest_path: Path,
    out: Path,
    report: Path,
) -> None:
    """Join the slices and prove the result equals the census route: only a validated result appears."""
    query = read_query(query_path)
    slices = [Path(p) for shard in shards for p in json.loads(Path(shard).read_text())["slices"]]
    with atomic_path(out) as tmp:
        # no slice: allowed empty, no artifact matched
        obs = concat_slices(slices, query, tmp) if slices else write_empty(tmp, query["obs_columns"])
        failpoint("assemble")
        validate_routes(tmp, census, obs, query, manifest_path, report)


def write_empty(out: Path, obs_columns: list[str]) -> pd.DataFrame:
    """A valid result with no cells and no genes, shaped like any other result; returns its slice obs."""
    from cellquery.h5ad import write_streamed
    from cellquery.slicing import VAR_COLUMNS, result_columns, slice_columns

    obs = pd.DataFrame(columns=slice_columns(obs_columns), dtype=str)
    write_streamed(out, obs[result_columns(obs_columns)], pd.DataFrame(columns=VAR_COLUMNS, dtype=str), [])
    log.info("no artifact matched: wrote an empty result (allow_empty)")
    return obs


def concat_slices(slices: list[Path], query: dict, out: Path) -> pd.DataFrame:
    """Join per-dataset slices on genes, one slice's counts in memory at a time; returns the slices' obs."""
    from cellquery.h5ad import concatenate
    from cellquery.slicing import result_columns

    join = query["gene_join"]
    obs = concatenate(slices, join, out, result_columns(query["obs_columns"]))
    held = obs["dataset_id"].nunique()
    log.info("concatenated %d slices (%s join over the %d datasets holding cells)", len(slices), join, held)
    log_coverage(query["gene_coverage"], query["organism"], join)
    return obs


def validate_routes(
    result: Path, census: Path, slices_obs: pd.DataFrame, query: dict, manifest_path: Path, report_out: Path
) -> None:
    """Write the validation report; fail with a readable diff when the routes disagree."""
    from cellquery.coverage import joined_genes
    from cellquery.inclusion import included_cells
    from cellquery.validate import compare_routes, describe_failure

    included = included_cells(slices_obs)
    datasets = sorted(set(slices_obs["dataset_id"].astype(str)[included]))
    report = compare_routes(
        result,
        census,
        query["organism"],
        read_manifest(manifest_path),
        included,
        joined_genes(query, datasets),
    )
    coverage = query["gene_coverage"]
    report["genes"] = {
        "join": query["gene_join"],
        "requested": coverage["genes_asked"],
        "kept": report["totals"]["h5ad_genes"],
        "measured_by_only_some_datasets": coverage["in_some_datasets"],
        "partial_genes": coverage["partial_genes"],
    }
    write_json(report_out, report)
    if report["status"] != "passed":
        echo(f"{describe_failure(report)}\n  full report: {report_out}")
        raise SystemExit(describe_failure(report))
    totals = report["totals"]
    log.info(
        "validation passed: %d cells matched, %d genes compared",
        totals["matched_cells"],
        totals["genes_compared"],
    )


def register(
    spec: QuerySpec, demo: DemoInstance, result: Path, query_path: Path, manifest_path: Path, out: Path
):
    from cellquery import registry
    from cellquery.register import register_result

    ln = registry.connect_source(spec, demo)
    query = read_query(query_path)
    intent = QueryFiles(spec.name).register_intent
    receipt = register_result(ln, spec, result, read_manifest(manifest_path), query["census"]["uid"], intent)
    write_json(out, receipt)
    return receipt


def describe(spec: QuerySpec, demo: DemoInstance, inputs: dict[str, Path], out: dict[str, str]) -> None:
    """The report's figures and pages (`rules/report.smk`)."""
    from cellquery import registry
    from cellquery.report import describe_run

    ln = registry.connect_source(spec, demo)
    describe_run(ln, inputs, out)
    log.info("report figures and pages written to %s", Path(out["lineage"]).parent)
