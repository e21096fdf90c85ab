"""Datasets of another instance in an atlas, zero-copy: found in the source's `cellxgene-census` collection
(in a process connected to the source), then recorded in the atlas with the source's uid, key, hash and file
(`cellquery.instances.zero_copy`) and annotated by lamindb's CELLxGENE curator."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cellquery.cellxgene.release import releases
from cellquery.errors import SpecError
from cellquery.files import h5ad
from cellquery.ingest import registry
from cellquery.instances.source import Source
from cellquery.instances.zero_copy import bare_artifact
from cellquery.spec.query_spec import suggest

log = logging.getLogger(__name__)


def find(source: Source, wanted: dict[str, str | None], storage: dict) -> dict:
    """Datasets of another instance's `cellxgene-census` collection (`wanted`: dataset id -> its collection
    version, None for the latest), their files fetched, integrity-checked (in place when local): the
    source's identity and a manifest row per dataset with where its file was read (`local`). An unknown
    version or dataset, or one of an older schema: one line naming it."""
    from cellquery.query.artifacts import collection_version, fetch, manifest

    found = source.registry()
    rows = {}
    for version in sorted(set(wanted.values()), key=str):
        collection = collection_version(found, registry.COLLECTION_KEY, version, f"{source.slug}: ")
        table = manifest(collection.artifacts.filter(suffix=".h5ad"))
        datasets = sorted(d for d, v in wanted.items() if v == version)
        _check_held(datasets, table, f"{source.slug} {collection.version_tag}")
        for row in table[table["dataset_id"].isin(datasets)].to_dict("records"):
            row = {column: _plain(value) for column, value in row.items()}
            row["local"] = str(fetch(row, storage))
            _check_schema(row, source.slug, collection.version_tag)
            rows[row["dataset_id"]] = row
            log.info(
                "%s: %s of %s %s [%d/%d]",
                row["dataset_id"],
                row["uid"],
                source.slug,
                collection.version_tag,
                len(rows),
                len(wanted),
            )
    return {"source": found.instance, "datasets": rows}


def _check_held(datasets: list[str], table: pd.DataFrame, where: str) -> None:
    """Each dataset is one of the collection version's; else one line each, with the closest id."""
    held = sorted(table["dataset_id"])
    if missing := [d for d in datasets if d not in held]:
        raise SpecError(*(f"datasets: {where} holds no dataset {d!r}{suggest(d, held)}" for d in missing))


def _plain(value):
    """A manifest value as JSON holds it: numpy's scalars as Python's, a missing one as None."""
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _check_schema(row: dict, slug: str, version: str) -> None:
    """An atlas's store is built as the newest Census generation builds: its datasets are of that schema."""
    schema = str(h5ad.read_uns(Path(row["local"])).get("schema_version", "unknown"))
    newest = releases()[-1].dataset_schema
    if schema.split(".")[0] != newest.split(".")[0]:
        raise SpecError(
            f"datasets: {row['dataset_id']} of {slug} {version} is of CELLxGENE schema {schema}; an atlas "
            f"holds datasets of schema {newest}: record it from a collection version of that schema"
        )


def record(ln, row: dict, source: dict):
    """Another instance's dataset recorded zero-copy (its file stays where the source keeps it; a newer
    version of an artifact the atlas holds the latest of its family)."""
    artifact = ln.Artifact.filter(uid=row["uid"]).one_or_none()
    if artifact is None:
        ln.Artifact.objects.bulk_create([bare_artifact(ln, row, source)])
        artifact = ln.Artifact.get(uid=row["uid"])
        family = ln.Artifact.filter(uid__startswith=artifact.stem_uid).exclude(uid=artifact.uid)
        family.update(is_latest=False)
    return artifact


def fetched_files(receipts: Iterable[Path]) -> dict[str, Path]:
    """Where `find` read each recorded artifact's file (by uid), from its receipts."""
    return {
        row["uid"]: Path(row["local"])
        for receipt in receipts
        for row in json.loads(Path(receipt).read_text())["datasets"].values()
    }
