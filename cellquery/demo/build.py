"""The demo build's steps, one function per Snakemake rule (see `rules/demo.smk`)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from cellquery.cellxgene.release import release_named
from cellquery.demo import catalog, synth
from cellquery.files.atomic import write_json
from cellquery.ingest import registry
from cellquery.ingest.store import CENSUS_KEY, move_store, place_store
from cellquery.instances.demo_instance import DEMO_FORMAT, DemoInstance
from cellquery.instances.lamin import connect, recreate_database
from cellquery.store.build import build_census
from cellquery.store.sources import SourceDataset

log = logging.getLogger(__name__)


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


def create_instance(demo: DemoInstance, scale: str, seed: int, receipt: Path) -> None:
    """A fresh instance with ontologies, users and the curation schema; a half-built one is replaced. The
    receipt records the seed its data are made from (`DemoInstance.check_seed` reads it)."""
    from cellquery.demo.populate import init_instance

    demo.mark_unbuilt()
    for leftover in ("storage", "settings", "cache", ".lamin"):
        shutil.rmtree(demo.root / leftover, ignore_errors=True)
    if demo.db_url:
        recreate_database(demo.db_url)
    if demo.storage_kind == "s3":
        empty_bucket(demo)
    ln = init_instance(demo, scale)
    if (
        demo.storage_kind == "s3"
    ):  # the bucket root, as s3://cellxgene-data-public; results go to local storage
        ln.Storage(root=demo.data_root).save()
    instance = ln.setup.settings.instance
    write_json(receipt, {"slug": demo.slug, "storage": demo.data_root, "db": instance.db, "seed": seed})
    log.info("instance %s ready at %s", demo.slug, demo.storage)


def empty_bucket(demo: DemoInstance) -> None:
    """A fresh server and an empty bucket (a storage location another instance left is read-only); this
    process (it creates the instance and writes its storage marker) keeps the server's credentials."""
    from cellquery.storage.settings import filesystem

    server = demo.object_server
    os.environ.update(server.uploader_env())
    server.stop()
    shutil.rmtree(server.root / "data", ignore_errors=True)
    server.ensure_running()
    filesystem(demo.data_root).mkdir(demo.bucket)
    log.info("bucket %s on %s", demo.bucket, server.endpoint)


def register_all(demo: DemoInstance, scale: str, shard_dirs: list[Path], receipt: Path) -> None:
    """Per release, as the public instance's script: the h5ads put in the storage and registered in place
    (revising the previous release's), the collection versions, then the curator's annotations."""
    from cellquery.demo.populate import (
        assign_curators,
        create_collections,
        curate,
        register_in_place,
    )

    demo.mark_unbuilt()
    ln = connect(demo.uploader_env())
    paths = {p.stem: p for d in shard_dirs for p in sorted(Path(d).glob("*.h5ad"))}
    registered: dict[str, list[tuple]] = {}  # release -> (spec, artifact)
    previous: dict[str, object] = {}  # dataset id -> its artifact in the release before
    for version in (catalog.V1, catalog.V2):
        specs = catalog.release(scale, version)
        locations = place_release(demo, version, specs, paths)
        registered[version] = []
        for spec, location in zip(specs, locations, strict=True):
            artifact = register_in_place(ln, spec, location, version, previous.get(spec.dataset_id))
            registered[version].append((spec, artifact))
        previous = {spec.dataset_id: artifact for spec, artifact in registered[version]}
        log.info("release %s: %d h5ads registered in place", version, len(specs))
    collections = create_collections(ln, {v: [a for _, a in pairs] for v, pairs in registered.items()})
    with registry.offline_organism_inference():
        for version, pairs in registered.items():
            refused = 0
            for number, (spec, artifact) in enumerate(pairs, start=1):
                refused += not curate(ln, artifact, spec)
                if number % 50 == 0 or number == len(pairs):
                    log.info(
                        "release %s: %d/%d through the curator, %d refused",
                        version,
                        number,
                        len(pairs),
                        refused,
                    )
    assign_curators(ln, [pair for pairs in registered.values() for pair in pairs])
    write_json(
        receipt,
        {c.version_tag: {"uid": c.uid, "artifacts": c.artifacts.count()} for c in collections},
    )


def place_release(demo: DemoInstance, version: str, specs: list, paths: dict[str, Path]) -> list[str]:
    """Put a release's h5ads where the public bucket keeps them (`cell-census/<version>/h5ads/`); returns
    their locations. Local storage: hard links to the generated files where the disk allows. S3: uploaded
    as the AWS CLI uploads."""
    if demo.storage_kind == "s3":
        return [upload_h5ad(demo, paths[spec.file_stem], spec.key(version)) for spec in specs]
    locations = []
    for spec in specs:
        target = demo.storage / spec.key(version)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(paths[spec.file_stem], target)
        locations.append(str(target))
    return locations


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another disk
        shutil.copyfile(source, target)


# The AWS CLI's (and boto3's) defaults: files from 8 MiB on go up in 8 MiB parts, their ETag `<md5>-<parts>`.
MULTIPART = 8 * 1024 * 1024


def upload_h5ad(demo: DemoInstance, path: Path, key: str) -> str:
    """Upload one h5ad to the demo's bucket as `aws s3 cp` would; returns its location with the endpoint."""
    import boto3
    from boto3.s3.transfer import TransferConfig

    endpoint = demo.object_server.endpoint
    client = boto3.client("s3", endpoint_url=endpoint, **_credentials(demo))
    config = TransferConfig(multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART)
    client.upload_file(str(path), demo.bucket, key, Config=config)
    return f"s3://{demo.bucket}/{key}?endpoint_url={endpoint}"


def _credentials(demo: DemoInstance) -> dict[str, str]:
    env = demo.object_server.uploader_env()
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def census_sources(ln, scale: str, version: str) -> list[SourceDataset]:
    """The release's h5ads, cached locally, with their CELLxGENE identifiers (the dataset id: the key's
    stem, as in the public instance)."""
    collection = ln.Collection.get(key=registry.COLLECTION_KEY, version_tag=version)
    specs = {spec.dataset_id: spec for spec in catalog.release(scale, version)}
    sources = []
    for artifact in collection.ordered_artifacts.all():
        dataset_id = Path(artifact.key).stem
        sources.append(
            SourceDataset(
                dataset_id=dataset_id,
                dataset_version_id=specs[dataset_id].dataset_version_id,
                title=artifact.description,
                path=Path(artifact.cache()),
                collection_id=collection.uid,
                collection_name=collection.description,
                citation=f"cellquery demo: {artifact.description}",
            )
        )
    return sources


def build_census_store(demo: DemoInstance, version: str, receipt: Path) -> None:
    """Build the SOMA store of one release inside the storage and register it in place, revising the
    previous release's store (as the public instance's script does)."""
    demo.mark_unbuilt()
    ln = connect(demo.uploader_env())
    key = CENSUS_KEY.format(version=version)
    staging = demo.root / "census-staging" / key
    shutil.rmtree(staging, ignore_errors=True)
    summary = build_census(census_sources(ln, demo.scale, version), staging, version, release_named(version))
    if demo.storage_kind == "local":
        artifact = place_store(
            ln, staging, key, version, summary, lambda store: move_store(store, demo.storage / key)
        )
    else:
        artifact = place_store(
            ln, staging, key, version, summary, lambda store: upload_store(demo, store, key)
        )
    write_json(receipt, {**summary, "key": key, "uid": artifact.uid, "path": str(artifact.path)})
    cells, datasets = summary["total_cell_count"], summary["datasets"]
    log.info("census %s: %d cells from %d datasets", version, cells, datasets)


def upload_store(demo: DemoInstance, store: Path, key: str) -> str:
    """Copy a SOMA store built on disk into the demo's bucket; returns its location with the endpoint."""
    from cellquery.storage.settings import filesystem, split_root

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
    from cellquery.workflow.jobs import echo

    summary = summarise(connect(demo.env()))
    write_json(out, {**summary, "demo_format": DEMO_FORMAT})  # what `DemoInstance.check_format` reads
    log.info("\n%s", as_text(summary))
    echo(as_text(summary))
