"""The query pipeline's steps, one function per Snakemake rule (see `rules/query.smk`)."""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import pandas as pd

from cellquery.atomic import atomic_path, write_json
from cellquery.criteria import Criterion, resolve
from cellquery.faults import failpoint
from cellquery.jobs import echo
from cellquery.lamin import DemoInstance
from cellquery.spec import QuerySpec, SpecError

log = logging.getLogger(__name__)

# The shape of query.json and manifest.tsv: a `resolve` param, so a cellquery that changes it re-resolves.
RESOLVED_FORMAT = 2
MAX_AUTO_SHARD = 100
AUTO_SHARDS = 8
MIN_SHARD_BYTES = 2**29
MAX_SHARD_BYTES = 2**33


def read_query(path: Path) -> dict:
    """The resolved query written by `resolve`: criteria, gene ids, collection and census store."""
    return json.loads(Path(path).read_text())


def criteria_of(query: dict) -> list[Criterion]:
    return [Criterion.from_dict(c) for c in query["criteria"]]


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"version": str}, keep_default_na=False)


def plan_query(spec: QuerySpec, demo: DemoInstance) -> tuple[dict, pd.DataFrame]:
    """What `resolve` decides, checked against the registry: the resolved query and the manifest.

    Raises a one-line `SpecError` (or `SourceError`) for anything the registry cannot answer, and for a query
    that matches nothing unless the spec says `allow_empty: true`. Reads no h5ad.
    """
    from cellquery import registry
    from cellquery.census import cells_per_dataset
    from cellquery.genes import resolve_genes
    from cellquery.register import check_output_key

    ln = registry.connect_source(spec, demo)
    collection = registry.collection_for(ln, spec)
    criteria = resolve(spec)
    store = registry.census_store(ln, spec, collection)
    check_output_key(ln, spec)
    gene_ids = resolve_genes(spec.genes, spec.organism) if spec.genes else None
    table = registry.manifest(registry.artifact_query(ln, spec, collection, criteria))
    dataset_ids = list(table["dataset_id"])
    cells = sum(cells_per_dataset(str(store.path), criteria, spec.organism, dataset_ids).values())
    if not cells and not spec.allow_empty:
        found = "no artifact" if table.empty else f"{len(table)} artifacts but no cells"
        raise SpecError(
            f"cells: the query matches {found} in {collection.key} {collection.version_tag} "
            "(allow_empty: true registers an empty result instead)"
        )
    query = {
        "name": spec.name,
        "spec": spec.data,
        "spec_digest": spec.digest,
        "organism": spec.organism,
        "criteria": [c.as_dict() for c in criteria],
        "gene_ids": gene_ids,
        "obs_columns": spec.obs_columns,
        "collection": {
            "key": collection.key,
            "version": collection.version_tag,
            "uid": collection.uid,
            "artifacts": collection.artifacts.count(),
        },
        "census": {"key": store.key, "uid": store.uid, "path": str(store.path), "cells": cells},
    }
    return query, table


def resolve_query(spec: QuerySpec, demo: DemoInstance, query_out: Path, manifest_out: Path) -> None:
    """Resolve names against the registry, find the artifacts (backend a), and write the manifest."""
    query, table = plan_query(spec, demo)
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


def write_plan(query_path: Path, manifest_path: Path, out: Path) -> str:
    """What a run will read, and the cells it will hold, per dataset; written as TSV, returned as text.

    Reads no h5ad: sizes and cell counts come from the registry (`n_obs`: all cells of the file) and from
    the census store (`census_cells`: the cells the query selects, after the Census inclusion rules).
    """
    from cellquery.census import cells_per_dataset

    query, table = read_query(query_path), read_manifest(manifest_path)
    selected = cells_per_dataset(
        query["census"]["path"], criteria_of(query), query["organism"], list(table["dataset_id"])
    )
    table["census_cells"] = table["dataset_id"].map(selected).astype(int)
    table["to_fetch"] = table["size"].where(~table["path"].map(_is_local_file), 0)
    plan = table[["dataset_id", "key", "uid", "size", "to_fetch", "n_obs", "census_cells"]]
    with atomic_path(out) as tmp:
        plan.to_csv(tmp, sep="\t", index=False)
    collection = query["collection"]
    lines = [
        f"plan for {query['name']}: {len(plan)} datasets of {collection['key']} {collection['version']}",
        f"  {'dataset':<38} {'MB':>9} {'cells in file':>13} {'cells selected':>14}",
        *(
            f"  {row.dataset_id:<38} {row.size / 1e6:>9.1f} {row.n_obs:>13,} {row.census_cells:>14,}"
            for row in plan.itertuples()
        ),
        f"  {'total':<38} {plan['size'].sum() / 1e6:>9.1f} {plan['n_obs'].sum():>13,} "
        f"{plan['census_cells'].sum():>14,}",
        f"  to fetch: {plan['to_fetch'].sum() / 1e6:.1f} MB (files in local storage are read in place)",
    ]
    return "\n".join(lines)


def _is_local_file(path: str) -> bool:
    return "://" not in path and Path(path).exists()


def preflight(spec: QuerySpec, demo: DemoInstance) -> None:
    """Run `resolve`'s registry checks before any job: a bad spec stops with one line naming the file."""
    from cellquery.registry import SourceError

    try:
        plan_query(spec, demo)
    except (SpecError, SourceError) as error:
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
    """Fetch (hash-checked) and slice each artifact of one shard; a current slice is kept as it is."""
    from cellquery import registry
    from cellquery.slicing import slice_dataset

    query = read_query(query_path)
    table = read_manifest(manifest_path).set_index("uid", drop=False)
    results = Path(out).parent.parent
    connect = functools.cache(lambda: registry.connect_source(spec, demo))
    if spec.instance == "demo":  # lamindb_setup, imported to hash files, must not fall back to ~/.lamin
        os.environ.update(demo.env())
    slices = []
    for number, uid in enumerate(uids, start=1):
        target = results / "slices" / f"{uid}.h5ad"
        if _slice_is_current(target, uid, spec.cells_digest):
            log.info("artifact %s: slice is current [%d/%d]", uid, number, len(uids))
        else:
            try:
                source = registry.fetch(table.loc[uid], connect)
            except registry.SourceError as error:  # a damaged file never reaches a slice
                echo(f"cellquery: {error}")
                raise SystemExit(str(error)) from None
            write_json(results / "cache" / f"{uid}.json", {"uid": uid, "path": str(source)})
            slice_dataset(
                source,
                criteria_of(query),
                dataset_id=table.loc[uid, "dataset_id"],
                organism=query["organism"],
                obs_columns=query["obs_columns"],
                gene_ids=query["gene_ids"],
                out=target,
                provenance={"uid": uid, "cells_digest": spec.cells_digest},
            )
            log.info("artifact %s sliced [%d/%d]", uid, number, len(uids))
        slices.append(str(target))
    write_json(out, {"uids": list(uids), "slices": slices})


def census_route(query_path: Path, manifest_path: Path, out: Path) -> None:
    from cellquery.census import census_slice

    query = read_query(query_path)
    census_slice(
        query["census"]["path"],
        criteria_of(query),
        organism=query["organism"],
        dataset_ids=list(read_manifest(manifest_path)["dataset_id"]),
        obs_columns=query["obs_columns"],
        gene_ids=query["gene_ids"],
        out=out,
    )


def assemble(
    shards: list[Path],
    join: str,
    census: Path,
    query_path: Path,
    manifest_path: Path,
    out: Path,
    report: Path,
) -> None:
    """Join the slices and prove the result equals the census route: only a validated result appears."""
    slices = [Path(p) for shard in shards for p in json.loads(Path(shard).read_text())["slices"]]
    with atomic_path(out) as tmp:
        if slices:
            concat_slices(slices, join, tmp)
        else:  # allowed empty: no artifact matched
            write_empty(tmp, read_query(query_path)["obs_columns"])
        failpoint("assemble")
        validate_routes(tmp, census, query_path, manifest_path, report)


def write_empty(out: Path, obs_columns: list[str]) -> None:
    """A valid result with no cells and no genes, shaped like any other result."""
    from cellquery.h5ad import write_streamed
    from cellquery.slicing import KEY_COLUMNS, VAR_COLUMNS

    obs = pd.DataFrame(columns=[*dict.fromkeys([*KEY_COLUMNS, *obs_columns])], dtype=str)
    write_streamed(out, obs, pd.DataFrame(columns=VAR_COLUMNS, dtype=str), [])
    log.info("no artifact matched: wrote an empty result (allow_empty)")


def concat_slices(slices: list[Path], join: str, out: Path) -> None:
    """Join per-dataset slices on genes, one slice's counts in memory at a time."""
    from cellquery.h5ad import concatenate

    concatenate(slices, join, out)
    log.info("concatenated %d slices (%s join)", len(slices), join)


def validate_routes(
    result: Path, census: Path, query_path: Path, manifest_path: Path, report_out: Path
) -> None:
    """Write the validation report; fail with a readable diff when the routes disagree."""
    from cellquery.validate import compare_routes, describe_failure

    query = read_query(query_path)
    report = compare_routes(result, census, query["organism"], read_manifest(manifest_path))
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
    intent = Path(out).with_name(".register-intent.json")
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
