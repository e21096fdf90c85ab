"""The demo build's steps, one function per Snakemake rule (see `rules/demo.smk`)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from cellquery.atomic import write_json
from cellquery.demo import catalog, synth
from cellquery.demo.census_store import SourceDataset, build_census
from cellquery.lamin import DemoInstance, connect

log = logging.getLogger(__name__)

CENSUS_KEY = "cell-census/{version}/soma"
# Scales whose generated h5ads, once registered in local storage, become hard links to the stored copies:
# one copy on disk (11 GB less at atlas scale), the same files.
LINKED_SCALES = ("atlas",)


def write_shard(scale: str, shard: int, seed: int, out_dir: Path) -> None:
    """Write one shard's h5ads into `out_dir` (complete or absent)."""
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    specs = catalog.generation_batches(scale)[shard]
    for number, spec in enumerate(specs, start=1):
        adata = synth.write_dataset(spec, seed, staging / f"{spec.file_stem}.h5ad")
        log.info("wrote %s (%d cells x %d genes) [%d/%d]", spec.file_stem, *adata.shape, number, len(specs))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def create_instance(demo: DemoInstance, scale: str, receipt: Path) -> None:
    """A fresh instance with ontologies, users and the curation schema; a half-built one is replaced."""
    from cellquery.demo.populate import init_instance

    for leftover in ("storage", "settings", "cache", ".lamin"):
        shutil.rmtree(demo.root / leftover, ignore_errors=True)
    if demo.db_url:
        recreate_database(demo.db_url)
    if demo.storage_kind == "s3":
        empty_bucket(demo)
    ln = init_instance(demo, scale)
    if demo.storage_kind == "s3":  # results still go to the instance's default (local) storage
        ln.Storage(root=demo.data_root).save()
    instance = ln.setup.settings.instance
    write_json(receipt, {"slug": demo.slug, "storage": demo.data_root, "db": instance.db})
    log.info("instance %s ready at %s", demo.slug, demo.storage)


def empty_bucket(demo: DemoInstance) -> None:
    """A fresh server and an empty bucket (a storage location another instance left is read-only)."""
    from cellquery.storage import filesystem

    server = demo.object_server
    os.environ.update(server.env())
    server.stop()
    shutil.rmtree(server.root / "data", ignore_errors=True)
    server.ensure_running()
    filesystem(demo.data_root).mkdir(demo.bucket)
    log.info("bucket %s on %s", demo.bucket, server.endpoint)


def recreate_database(url: str) -> None:
    """The demo owns the database its URL names: drop it if present and create it empty."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    server = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(server)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connection.close()
    log.info("PostgreSQL database %s created on %s", name, parts.hostname)


def register_all(demo: DemoInstance, scale: str, shard_dirs: list[Path], receipt: Path) -> None:
    """Register every dataset (curated), then the collection versions."""
    from cellquery.demo.populate import create_collections, curation_schema, register_dataset

    ln = connect(demo.env())
    if demo.storage_kind == "s3":
        ln.settings.storage = demo.data_root  # this process uploads the datasets to the bucket
    schema = curation_schema(ln)
    paths = {p.stem: p for d in shard_dirs for p in sorted(Path(d).glob("*.h5ad"))}
    members: dict[str, list] = {version: [] for version in (catalog.V1, catalog.V2)}
    specs = catalog.datasets(scale)
    for number, spec in enumerate(specs, start=1):
        artifact = register_dataset(ln, spec, paths[spec.file_stem], schema)
        if scale in LINKED_SCALES and demo.storage_kind == "local":
            link_to_stored(paths[spec.file_stem], Path(artifact.path))
        for version in spec.versions:
            members[version].append(artifact)
        if number % 50 == 0 or number == len(specs):
            log.info("registered %d/%d datasets", number, len(specs))
    collections = create_collections(ln, members)
    write_json(
        receipt,
        {c.version_tag: {"uid": c.uid, "artifacts": c.artifacts.count()} for c in collections},
    )


def link_to_stored(generated: Path, stored: Path) -> None:
    """Replace a generated h5ad by a hard link to its registered copy (same bytes: lamindb copied it)."""
    if generated.samefile(stored) or generated.stat().st_dev != stored.stat().st_dev:
        return
    if generated.stat().st_size != stored.stat().st_size:
        raise RuntimeError(f"{stored} is not a copy of {generated}")
    link = generated.with_name(f".{generated.name}.link")
    link.unlink(missing_ok=True)
    os.link(stored, link)
    os.replace(link, generated)


def census_sources(ln, version: str) -> list[SourceDataset]:
    """The collection version's h5ads, cached locally, with their CELLxGENE identifiers."""
    collection = ln.Collection.get(key=catalog.COLLECTION_KEY, version_tag=version)
    sources = []
    for artifact in collection.ordered_artifacts.all():
        values = artifact.features.get_values()
        sources.append(
            SourceDataset(
                dataset_id=values["dataset_id"],
                dataset_version_id=values["dataset_version_id"],
                title=artifact.description,
                path=Path(artifact.cache()),
                collection_id=collection.uid,
                collection_name=collection.description,
            )
        )
    return sources


def build_census_store(demo: DemoInstance, version: str, receipt: Path) -> None:
    """Build the SOMA store of one collection version inside the storage and register it in place."""
    ln = connect(demo.env())
    key = CENSUS_KEY.format(version=version)
    existing = ln.Artifact.filter(key=key).one_or_none()
    if existing is not None:
        existing.delete(permanent=True, storage=True)
    store = demo.storage / key if demo.storage_kind == "local" else demo.root / "census-staging" / key
    summary = build_census(census_sources(ln, version), store, version)
    location = str(store) if demo.storage_kind == "local" else upload_store(demo, store, key)
    # The Census root is a SOMA Collection (from_tiledbsoma takes Experiments only): registered in place.
    artifact = ln.Artifact(location, key=key, description=f"Census {version}", otype="tiledbsoma")
    artifact.n_observations = summary["total_cell_count"]
    artifact.save()
    write_json(receipt, {**summary, "key": key, "uid": artifact.uid, "path": str(artifact.path)})
    cells, datasets = summary["total_cell_count"], summary["datasets"]
    log.info("census %s: %d cells from %d datasets", version, cells, datasets)


def upload_store(demo: DemoInstance, store: Path, key: str) -> str:
    """Copy a SOMA store built on disk into the demo's bucket; returns its location with the endpoint."""
    from cellquery.storage import filesystem, split_root

    base, endpoint = split_root(demo.data_root)
    remote = f"{base.removeprefix('s3://')}/{key}"
    fs = filesystem(demo.data_root)
    if fs.exists(remote):
        fs.rm(remote, recursive=True)
    fs.put(str(store), remote, recursive=True)
    shutil.rmtree(store)
    log.info("uploaded %s to %s", key, endpoint)
    return f"s3://{remote}?endpoint_url={endpoint}"


def write_summary(demo: DemoInstance, out: Path) -> None:
    from cellquery.demo.summary import as_text, summarise
    from cellquery.jobs import echo

    summary = summarise(connect(demo.env()))
    write_json(out, summary)
    log.info("\n%s", as_text(summary))
    echo(as_text(summary))
