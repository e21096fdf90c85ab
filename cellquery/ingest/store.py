"""A version's Census-shaped store put in place and registered, as the public instance's script registers
the Census: `cell-census/<version>/soma`, revising the previous version's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

CENSUS_KEY = "cell-census/{version}/soma"  # as the public instance keys a release's store


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
