"""A collection version's Census-shaped store: built (from the previous version's where it can be), put in
place and registered as the public instance's script registers the Census: `cell-census/<version>/soma`,
revising the previous version's. One step for the demo's releases and an atlas's versions."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

from cellquery.cellxgene.release import CensusRelease, release_for
from cellquery.files import h5ad
from cellquery.files.atomic import write_json
from cellquery.ingest import imports, registry
from cellquery.instances.lamin import BuiltInFolder
from cellquery.store.build import build_census
from cellquery.store.increment import extend_census
from cellquery.store.sources import SourceDataset
from cellquery.workflow.faults import failpoint

log = logging.getLogger(__name__)

CENSUS_KEY = "cell-census/{version}/soma"  # as the public instance keys a release's store
# The portal's citation names the dataset's version: `... Dataset Version: https://datasets.cellxgene
# .cziscience.com/<dataset_version_id>.h5ad curated and distributed by CZ CELLxGENE Discover ...`.
PORTAL_VERSION = re.compile(r"Dataset Version: (?:https://datasets\.cellxgene\.cziscience\.com/)?([\w-]+)")


def build_version_store(folder: BuiltInFolder, version: str, previous: str | None, receipt: Path) -> None:
    """The store of the collection version `version`, built beside the storage, validated, then put in place
    and registered. Built at the Census generation of its datasets' schema; from the previous version's
    store when that is of the same generation (only what changed is read and written,
    `cellquery.store.increment`), anew otherwise, as the builder rebuilds a release."""
    folder.mark_unbuilt()
    ln = folder.connect_writer()
    collection = ln.Collection.get(key=registry.COLLECTION_KEY, version_tag=version)
    key = CENSUS_KEY.format(version=version)
    staging = folder.root / "census-staging" / key
    shutil.rmtree(staging, ignore_errors=True)
    sources, schemas = _sources(folder, collection)
    release = release_for(schemas, key)
    before = _extendable(folder, previous, release)
    if before:
        summary = extend_census(before, sources, staging, version, release)
        log.info(
            "census %s from %s: %d datasets reused, %d added, %d dropped",
            version,
            previous,
            len(summary["reused"]),
            len(summary["added"]),
            len(summary["dropped"]),
        )
    else:
        summary = build_census(sources, staging, version, release)
    failpoint("ingest-store")
    put = partial(_put, folder, key=key, previous=previous if before else None)
    artifact = place_store(ln, staging, key, version, summary, put)
    write_json(receipt, {**summary, "key": key, "uid": artifact.uid, "path": str(artifact.path)})
    log.info(
        "census %s: %d cells from %d datasets", version, summary["total_cell_count"], summary["datasets"]
    )


def _extendable(folder: BuiltInFolder, previous: str | None, release: CensusRelease) -> Path | None:
    """The previous version's store on disk, if this version's can be made from it (the same generation)."""
    from cellquery.query.census_route import store_release

    if not previous:
        return None
    store = folder.storage / CENSUS_KEY.format(version=previous)
    if not store.exists():
        log.info("census %s: not on disk here; this version's store is built anew", previous)
        return None
    built, _ = store_release({"path": str(store)})
    if built != release:
        log.info("census %s is %s, this version %s: built anew", previous, built.name, release.name)
        return None
    return store


def _sources(folder: BuiltInFolder, collection) -> tuple[list[SourceDataset], list[str | None]]:
    """A collection version's h5ads (a dataset of another instance read where `find_imports` fetched it),
    identified as the Census identifies them: the dataset by its key's stem, its version as the portal's
    citation names it (a submission has none: its artifact's uid); and the dataset schema each states."""
    fetched = imports.fetched_files(folder.root.glob("imports/*/*.json"))
    sources, schemas = [], []
    for artifact in collection.ordered_artifacts.all():
        path = fetched.get(artifact.uid) or Path(artifact.cache())
        uns = h5ad.read_uns(path)
        citation = str(uns.get("citation") or "")
        portal = PORTAL_VERSION.search(citation)
        sources.append(
            SourceDataset(
                dataset_id=Path(artifact.key).stem,
                dataset_version_id=portal.group(1) if portal else artifact.uid,
                title=artifact.description,
                path=path,
                collection_id=collection.uid,
                collection_name=collection.description,
                citation=citation or artifact.description,
            )
        )
        schemas.append(uns.get("schema_version"))
    return sources, schemas


def _put(folder: BuiltInFolder, staging: Path, key: str, previous: str | None) -> str:
    """Put a built store in the storage; in the S3 location too, where the files it shares with the previous
    version's store (`previous`: the one it was made from) are copied there, not uploaded again (the copy
    on disk is what the next version's store is made from)."""
    local = move_store(staging, folder.storage / key)
    if not folder.bucket_root:
        return local
    if not previous:
        return upload_store(Path(local), folder.bucket_root, key)
    before = CENSUS_KEY.format(version=previous)
    return upload_store(Path(local), folder.bucket_root, key, (folder.storage / before, before))


def place_store(ln, staging: Path, key: str, version: str, summary: dict, put: Callable[[Path], str]):
    """Replace the store registered under `key` (if any) by the validated one at `staging`, which `put`
    moves to its place and returns the location of; returns the new artifact. The old store is deleted
    only now: a build killed before this point leaves it in use."""
    existing = ln.Artifact.filter(key=key).one_or_none()
    if existing is not None:
        # lamindb deletes every version of a folder with its latest, taking them to share one store; each
        # version's store has a folder of its own: this version alone goes
        existing._overwrite_versions = False
        existing.delete(permanent=True, storage=True)
    location = put(staging)
    previous = ln.Artifact.filter(otype="tiledbsoma", key__startswith="cell-census/", version_tag__lt=version)
    # The Census root is a SOMA Collection (from_tiledbsoma takes Experiments only): registered in place.
    artifact = ln.Artifact(
        location,
        key=key,
        description=f"Census {version}",
        revises=previous.order_by("-version_tag").first(),
        version_tag=version,
        otype="tiledbsoma",
    )
    artifact.n_observations = summary["total_cell_count"]
    return artifact.save()


def move_store(staging: Path, store: Path) -> str:
    """Put a store built on disk in its place in a local storage (what a killed build left there replaced);
    returns its location."""
    import shutil

    shutil.rmtree(store, ignore_errors=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(store)
    return str(store)


def upload_store(store: Path, data_root: str, key: str, previous: tuple[Path, str] | None = None) -> str:
    """Copy a store built on disk to `<data_root>/<key>` (what a killed upload left there replaced); returns
    its location with the endpoint. `previous`: the previous version's store on disk and its key: a file
    both share (a hard link) is copied from there within the storage, not uploaded."""
    from cellquery.storage.settings import filesystem, split_root

    base, endpoint = split_root(data_root)
    bucket_path = base.removeprefix("s3://").rstrip("/")
    remote = f"{bucket_path}/{key}"
    fs = filesystem(data_root)
    if fs.exists(remote):
        fs.rm(remote, recursive=True)
    files = [p.relative_to(store).as_posix() for p in sorted(store.rglob("*")) if p.is_file()]
    shared = [f for f in files if previous and _same_file(store / f, previous[0] / f)]
    fresh = sorted(set(files) - set(shared))
    if shared:  # one batch each, as s3fs runs a list's transfers concurrently
        fs.copy([f"{bucket_path}/{previous[1]}/{f}" for f in shared], [f"{remote}/{f}" for f in shared])
    fs.put([str(store / f) for f in fresh], [f"{remote}/{f}" for f in fresh])
    log.info("%s: %d files uploaded, %d copied within the storage", key, len(fresh), len(shared))
    return f"s3://{remote}" + (f"?endpoint_url={endpoint}" if endpoint else "")


def _same_file(path: Path, other: Path) -> bool:
    return other.exists() and os.path.samefile(path, other)
