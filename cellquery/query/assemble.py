"""Step assemble: the slices joined on genes, and validated against the census route."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from cellquery.errors import UserError, ValidationFailed
from cellquery.files.atomic import atomic_path, write_json
from cellquery.query.coverage import log_coverage
from cellquery.query.runfiles import read_manifest, read_query
from cellquery.workflow.faults import failpoint
from cellquery.workflow.jobs import at_work

log = logging.getLogger(__name__)

FULL = {"mode": "full"}  # every cell's counts compared value by value


def assemble(
    shards: list[Path],
    census: Path,
    query_path: Path,
    manifest_path: Path,
    out: Path,
    report: Path,
    validation: dict | None = None,
) -> None:
    """Join the slices and prove the result equals the census route (`validation`: the config's, full by
    default): only a validated result appears."""
    from cellquery.outputs.provenance import UNS_KEY, provenance

    at_work()
    query = read_query(query_path)
    slices = [Path(p) for shard in shards for p in json.loads(Path(shard).read_text())["slices"]]
    uns = {UNS_KEY: provenance(query, read_manifest(manifest_path), "h5ad")}
    with atomic_path(out) as tmp:
        # no slice: allowed empty, no artifact matched
        if slices:
            obs = concat_slices(slices, query, tmp, uns)
        else:
            obs = write_empty(tmp, query["obs_columns"], query["layers"], uns)
        failpoint("assemble")
        checks = {"validation": validation or FULL, "read": bytes_read(shards, census)}
        if checks["validation"]["mode"] == "sampled":
            checks["totals"] = slice_totals(slices)
        validate_routes(tmp, census, obs, query, manifest_path, report, checks)
        finish(tmp, query, report)


def slice_totals(slices: list[Path]) -> pd.DataFrame:
    """Each sliced cell's raw_sum and nnz over the Census' genes, as its slice counted them, by cell key."""
    import anndata as ad
    import h5py

    from cellquery.query.slicing import TOTALS_KEY

    frames = []
    for path in slices:
        with h5py.File(path, "r") as f:
            keys = ad.io.read_elem(f["obs"][f["obs"].attrs["_index"]])
            frames.append(pd.DataFrame(ad.io.read_elem(f[f"uns/{TOTALS_KEY}"]), index=keys))
    return pd.concat(frames) if frames else pd.DataFrame({"raw_sum": [], "nnz": []})


def bytes_read(shards: list[Path], census: Path) -> dict:
    """What each route read from where the data lie: the h5ad route's downloads and streams (files in local
    storage are read in place, not counted), the census route's bytes from its store."""
    from cellquery.files.h5ad import read_uns
    from cellquery.query.census_route import READ_KEY

    receipts = [json.loads(Path(shard).read_text()) for shard in shards]
    reads = [read for receipt in receipts for read in receipt.get("reads", {}).values()]
    ways = {way: [r for r in reads if r["read"] == way] for way in ("download", "stream", "in place")}
    return {
        "h5ad_route": {
            "downloaded": sum(r["bytes"] for r in ways["download"]),
            "streamed": sum(r["bytes"] for r in ways["stream"]),
            "files_read_in_place": len(ways["in place"]),
            "slices_current": len(reads) - sum(map(len, ways.values())),
        },
        "census_route": int(read_uns(census).get(READ_KEY, {}).get("bytes", 0)),
    }


def finish(result: Path, query: dict, report: Path) -> None:
    """What the spec asks of the validated result: highly variable genes flagged, the CELLxGENE schema.
    What each did is added to the validation report."""
    output, done = query["output"], {}
    if output["hvg"]:
        from cellquery.query.variable_genes import mark_variable_genes

        hvg = output["hvg"]
        done["hvg"] = mark_variable_genes(result, n_top=hvg["n_top"], batch_key=hvg.get("batch_key"))
    if output["schema"] == "cellxgene":
        done["schema"] = as_cellxgene_dataset(result, query)
    if done:
        write_json(report, json.loads(report.read_text()) | done)


def as_cellxgene_dataset(result: Path, query: dict) -> dict:
    """Rewrite the result in the CELLxGENE schema's submission format (`cellquery.outputs.submission`)."""
    from cellquery.cellxgene.release import recorded
    from cellquery.files.h5ad import read_frame
    from cellquery.outputs.submission import SCHEMA_VERSION, write_submission

    obs = read_frame(result, "obs")
    collection = query["collection"]
    title = (
        f"cellquery {query['name']}: {len(obs):,} cells of {obs['dataset_id'].nunique()} datasets "
        f"from {collection['key']} {collection['version']}"
    )
    release = recorded(query["census"])
    schema = release.dataset_schema
    try:
        changes = write_submission(result, result, title=title, organism=query["organism"], release=release)
    except ValueError as error:
        raise UserError(f"output.schema: cellxgene: {error}") from None
    for change in changes:
        log.info("migrated from dataset schema %s: %s", schema, change)
    log.info("wrote the result in the CELLxGENE schema's submission format: %s", title)
    written = {"format": f"CELLxGENE dataset schema {SCHEMA_VERSION}, submission format", "title": title}
    return written | ({"migrated_from": {"dataset_schema": schema, "changes": changes}} if changes else {})


def write_empty(out: Path, obs_columns: list[str], layers: list[str], uns: dict) -> pd.DataFrame:
    """A valid result with no cells and no genes, shaped like any other result; returns its slice obs."""
    from cellquery.files.h5ad import write_streamed
    from cellquery.query.slicing import VAR_COLUMNS, result_columns, slice_columns

    obs = pd.DataFrame(columns=slice_columns(obs_columns), dtype=str)
    var = pd.DataFrame(columns=VAR_COLUMNS, dtype=str)
    write_streamed(out, obs[result_columns(obs_columns)], var, [], uns=uns, layers=layers)
    log.info("no artifact matched: wrote an empty result (allow_empty)")
    return obs


def concat_slices(slices: list[Path], query: dict, out: Path, uns: dict) -> pd.DataFrame:
    """Join per-dataset slices on genes, one slice's counts in memory at a time, keeping the cells the
    sample draws; returns the sampled slices' obs."""
    from cellquery.cellxgene.release import recorded
    from cellquery.files.h5ad import concatenate
    from cellquery.query.sampling import sampled
    from cellquery.query.slicing import result_columns

    release = recorded(query["census"])

    def keep(obs: pd.DataFrame):
        return sampled(obs, query["sample"], release.included_cells(obs, query["organism"]))

    join, columns = query["gene_join"], result_columns(query["obs_columns"])
    obs = concatenate(
        slices, join, out, columns, keep=keep, layers=query["layers"], uns=uns, gene_order=query["gene_ids"]
    )
    if query["sample"]:
        log.info("the sample keeps %d cells (%s)", len(obs), query["sample"])
    held = obs["dataset_id"].nunique()
    log.info("concatenated %d slices (%s join over the %d datasets holding cells)", len(slices), join, held)
    log_coverage(query["gene_coverage"], query["organism"], join)
    return obs


def validate_routes(
    result: Path,
    census: Path,
    slices_obs: pd.DataFrame,
    query: dict,
    manifest_path: Path,
    report_out: Path,
    checks: dict,
) -> None:
    """Write the validation report; fail with a readable diff when the routes disagree. `checks`: the
    `validation` asked for, what each route `read`, and for a sampled validation the h5ad route's cell
    `totals`."""
    from cellquery.cellxgene.release import recorded
    from cellquery.query.coverage import joined_genes
    from cellquery.query.validate import compare_routes, describe_failure

    included = recorded(query["census"]).included_cells(slices_obs, query["organism"])
    datasets = sorted(set(slices_obs["dataset_id"].astype(str)[included]))
    report = compare_routes(
        result,
        census,
        query["organism"],
        read_manifest(manifest_path),
        included,
        joined_genes(query, datasets),
        query["layers"],
        checks["validation"],
        checks.get("totals"),
    )
    reason = "an author column: only the source h5ads hold it, the census store does not"
    report["not_compared"] = {column: reason for column in query["author_columns"]}
    if query["sample"]:
        report["sample"] = query["sample"]
    coverage = query["gene_coverage"]
    report["genes"] = {
        "join": query["gene_join"],
        "requested": coverage["genes_asked"],
        "kept": report["totals"]["h5ad_genes"],
        "measured_by_only_some_datasets": coverage["in_some_datasets"],
        "partial_genes": coverage["partial_genes"],
    }
    write_json(report_out, report | {"bytes_read": checks["read"]})
    if report["status"] != "passed":
        raise ValidationFailed(f"{describe_failure(report)}\n  full report: {report_out}")
    totals = report["totals"]
    log.info(
        "validation passed: %d cells matched, %d genes compared",
        totals["matched_cells"],
        totals["genes_compared"],
    )
