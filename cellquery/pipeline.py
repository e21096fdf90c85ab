"""The query pipeline's steps, one function per Snakemake rule (see `rules/query.smk`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from cellquery.atomic import atomic_path, write_json
from cellquery.criteria import Criterion, resolve
from cellquery.jobs import echo
from cellquery.lamin import DemoInstance
from cellquery.spec import QuerySpec, SpecError

log = logging.getLogger(__name__)


def read_query(path: Path) -> dict:
    """The resolved query written by `resolve`: criteria, gene ids, collection and census store."""
    return json.loads(Path(path).read_text())


def criteria_of(query: dict) -> list[Criterion]:
    return [Criterion.from_dict(c) for c in query["criteria"]]


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"version": str}, keep_default_na=False)


def resolve_query(spec: QuerySpec, demo: DemoInstance, query_out: Path, manifest_out: Path) -> None:
    """Resolve names against the registry, find the artifacts (backend a), and write the manifest."""
    from cellquery import registry
    from cellquery.genes import resolve_genes

    ln = registry.connect_source(spec, demo)
    collection = registry.collection_for(ln, spec)
    criteria = resolve(spec)
    store = registry.census_store(ln, spec, collection)
    artifacts = registry.artifact_query(ln, spec, collection, criteria)
    table = registry.manifest(artifacts)
    if table.empty:
        raise SpecError(
            f"{spec.path}: no artifact in {collection.key} {collection.version_tag} matches the query"
        )
    query = {
        "name": spec.name,
        "spec": spec.data,
        "spec_digest": spec.digest,
        "organism": spec.organism,
        "criteria": [c.as_dict() for c in criteria],
        "gene_ids": resolve_genes(spec.genes, spec.organism) if spec.genes else None,
        "obs_columns": spec.obs_columns,
        "collection": {"key": collection.key, "version": collection.version_tag, "uid": collection.uid},
        "census": {"key": store.key, "uid": store.uid, "path": str(store.path)},
    }
    with atomic_path(manifest_out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    write_json(query_out, query)
    log.info(
        "%d of %d artifacts in %s %s match; census store %s",
        len(table),
        collection.artifacts.count(),
        collection.key,
        collection.version_tag,
        store.key,
    )


def cache_artifact(spec: QuerySpec, demo: DemoInstance, uid: str, out: Path) -> None:
    """Fetch one artifact and record where it is, after checking it against its registry hash."""
    from cellquery import registry

    ln = registry.connect_source(spec, demo)
    path = registry.fetch(ln, uid)
    write_json(out, {"uid": uid, "path": str(path), "size": path.stat().st_size})
    log.info("artifact %s cached at %s", uid, path)


def slice_artifact(query_path: Path, cache_receipt: Path, dataset_id: str, out: Path) -> None:
    from cellquery.slicing import slice_dataset

    query = read_query(query_path)
    source = Path(json.loads(Path(cache_receipt).read_text())["path"])
    slice_dataset(
        source,
        criteria_of(query),
        dataset_id=dataset_id,
        organism=query["organism"],
        obs_columns=query["obs_columns"],
        gene_ids=query["gene_ids"],
        out=out,
    )


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


def concat_slices(slices: list[Path], join: str, out: Path) -> None:
    """Join the per-dataset slices on genes without holding them all in memory."""
    import anndata as ad
    import h5py
    from anndata.experimental import concat_on_disk

    from cellquery.h5ad import read_frame

    features = pd.concat([read_frame(p, "var") for p in slices])
    features = features[~features.index.duplicated()]
    with atomic_path(out) as tmp:
        concat_on_disk([str(p) for p in slices], str(tmp), join=join)
        with h5py.File(tmp, "a") as f:  # concat_on_disk (anndata 0.11) leaves var without its columns
            genes = ad.io.read_elem(f["var"]).index
            del f["var"]
            ad.io.write_elem(f, "var", features.loc[genes])
    log.info("concatenated %d slices (%s join) into %s", len(slices), join, out)


def validate_routes(
    result: Path, census: Path, query_path: Path, manifest_path: Path, report_out: Path, passed_flag: Path
) -> None:
    """Write validation.json; fail (no flag, nothing registered) when the routes disagree."""
    from cellquery.validate import compare_routes, describe_failure

    query = read_query(query_path)
    report = compare_routes(result, census, query["organism"], read_manifest(manifest_path))
    write_json(report_out, report)
    if report["status"] != "passed":
        echo(f"{describe_failure(report)}\n  full report: {report_out}")
        raise SystemExit(describe_failure(report))
    write_json(passed_flag, {"status": "passed", "report": str(report_out)})
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
    receipt = register_result(ln, spec, result, read_manifest(manifest_path), query["census"]["uid"])
    write_json(out, receipt)
    return receipt
