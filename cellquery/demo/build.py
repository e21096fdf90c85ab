"""The demo build's steps, one function per Snakemake rule (see `rules/demo.smk`)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from cellquery.demo import catalog, synth
from cellquery.files.atomic import write_json
from cellquery.ingest import registry
from cellquery.ingest.version import Additions, Placed, register_version
from cellquery.instances.demo_instance import DEMO_FORMAT, DemoInstance, use_demo_settings
from cellquery.instances.lamin import connect, recreate_database

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


def create_instance(demo: DemoInstance, seed: int, receipt: Path) -> None:
    """A fresh instance (SQLite or PostgreSQL) with bionty, its defaults and curators; a half-built one is
    replaced. The receipt records the seed its data are made from (`DemoInstance.check_seed` reads it)."""
    demo.mark_unbuilt()
    for leftover in ("storage", "settings", "cache", ".lamin"):
        shutil.rmtree(demo.root / leftover, ignore_errors=True)
    if demo.db_url:
        recreate_database(demo.db_url)
    if demo.storage_kind == "s3":
        empty_bucket(demo)
    use_demo_settings(demo, fresh=True)
    demo.root.mkdir(parents=True, exist_ok=True)
    import lamindb_setup  # once pointed at the demo's settings

    # init writes a `.lamin/current_instance` marker into the working directory: keep it in the demo
    with contextlib.chdir(demo.root):
        lamindb_setup.init(storage=str(demo.storage), name=demo.name, modules="bionty", db=demo.db_url)
    ln = connect(demo.env())
    registry.create_defaults(ln, catalog.CURATORS)
    if demo.bucket_root:  # as s3://cellxgene-data-public; results go to local storage
        ln.Storage(root=demo.bucket_root).save()
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


def register_release(demo: DemoInstance, version: str, shard_dirs: list[Path], receipt: Path) -> None:
    """A release as the public instance's script makes it: its h5ads put in the storage, then registered in
    place (revising the previous release's) by the step that registers an atlas's version, with the
    collection version; the datasets the catalog makes fail the curator keep no labels. Then what the
    portal's records add: the curator who made each, no cell count for those the CELLxGENE API lists not."""
    specs = catalog.release(demo.scale, version)
    paths = {p.stem: p for d in shard_dirs for p in sorted(Path(d).glob("*.h5ad"))}
    locations = place_release(demo, version, specs, paths)
    log.info("release %s: %d h5ads in the storage", version, len(specs))
    additions = Additions(
        placed={
            spec.dataset_id: Placed(paths[spec.file_stem], location)
            for spec, location in zip(specs, locations, strict=True)
        },
        uncurated=frozenset(spec.dataset_id for spec in specs if spec.curation_fails),
    )
    plan = {
        "atlas": "CELLxGENE Census release",
        "previous": catalog.previous_release(version),
        "members": dict.fromkeys((spec.dataset_id for spec in specs), version),
    }
    members = register_version(demo, version, plan, additions, receipt)
    portal_records(demo.connect_writer(), specs, members)


def portal_records(ln, specs: list, members: dict) -> None:
    """Each artifact's creator its curator; no cell count where the CELLxGENE API does not list it."""
    for handle in catalog.CURATORS:
        ids = [members[spec.dataset_id].id for spec in specs if spec.curator == handle]
        ln.Artifact.filter(id__in=ids).update(created_by=ln.User.get(handle=handle))
    unlisted = [members[spec.dataset_id].id for spec in specs if not spec.listed]
    ln.Artifact.filter(id__in=unlisted).update(n_observations=None)


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


def write_summary(demo: DemoInstance, out: Path) -> None:
    from cellquery.demo.summary import as_text, summarise
    from cellquery.workflow.jobs import echo

    summary = summarise(connect(demo.env()))
    write_json(out, {**summary, "demo_format": DEMO_FORMAT})  # what `DemoInstance.check_format` reads
    log.info("\n%s", as_text(summary))
    echo(as_text(summary))
