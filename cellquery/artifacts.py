"""Backend (a): find the artifacts a query needs in a LaminDB instance; fetch them, integrity-checked."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pandas as pd

from cellquery.criteria import Criterion
from cellquery.errors import SourceError, SpecError
from cellquery.spec import ONTOLOGY_COLUMNS, ULABEL_COLUMNS, QuerySpec, suggest, unknown_values

MANIFEST_COLUMNS = [
    "uid",
    "key",
    "version",
    "hash",
    "size",
    "n_obs",
    "dataset_id",
    "title",
    "path",
    "storage_root",
]
LINKS = {id_column: link for id_column, _, link in ONTOLOGY_COLUMNS.values()}


def collection_for(ln, spec: QuerySpec):
    """The named collection at the spec's version, or its latest version."""
    key, version = spec.source["collection"], spec.source.get("version")
    versions = ln.Collection.filter(key=key)
    if not versions.exists():
        keys = ln.Collection.filter().values_list("key", flat=True)
        raise SpecError(f"source.collection: unknown collection {key!r}{suggest(key, keys)}")
    if version is None:
        return versions.filter(is_latest=True).first()
    match = versions.filter(version_tag=version).first()
    if match is None:
        tags = sorted(v for v in versions.values_list("version_tag", flat=True) if v)
        raise SpecError(
            f"source.version: collection {key!r} has no version {version!r}{suggest(version, tags)} "
            f"(versions: {', '.join(tags)})"
        )
    return match


def census_store(ln, spec: QuerySpec, collection):
    key = spec.source.get("census") or f"cell-census/{collection.version_tag}/soma"
    store = ln.Artifact.filter(key=key).first()
    if store is None:
        raise SpecError(f"source.census: no census store with key {key!r} in {spec.instance!r}")
    return store


def store_location(store) -> dict:
    """Where a census store artifact lives, as jobs open it (`cellquery.census.open_store`)."""
    return {"key": store.key, "uid": store.uid, "path": str(store.path), "root": store.storage.root}


def check_users(ln, spec: QuerySpec) -> None:
    """Every user handle of `artifacts.created_by` is a user of the instance."""
    known = set(ln.User.filter().values_list("handle", flat=True))
    unknown = [h for h in spec.artifacts.get("created_by", []) if h not in known]
    if unknown:

        def described(handle: str) -> str:
            return f"unknown user {handle!r}{suggest(handle, sorted(known))}"

        raise unknown_values("artifacts.created_by", unknown, described)


def _label_prefilter(ln, queryset, criterion: Criterion):
    """Narrow artifacts by the labels `in` criteria imply; `not_in` and others cannot exclude a file."""
    if criterion.op != "in":
        return queryset
    if criterion.column in LINKS:
        ids = [v for v in criterion.values if v not in ("na", "unknown")]
        if len(ids) < len(criterion.values):
            return queryset  # placeholder terms are not linked to artifacts
        if criterion.column == "tissue_ontology_term_id" and not all(
            str(v).startswith("UBERON:") for v in ids
        ):
            return queryset  # cultured cells name a cell type as their tissue; it is linked elsewhere
        link = LINKS[criterion.column]
        return queryset.filter(**{f"{link}__ontology_id__in": ids}).distinct()
    if criterion.column in ULABEL_COLUMNS:
        labels = ln.ULabel.filter(
            type__name=ULABEL_COLUMNS[criterion.column], name__in=list(criterion.values)
        )
        return queryset.filter(ulabels__in=labels).distinct()
    return queryset


def artifact_query(ln, spec: QuerySpec, collection, criteria: list[Criterion]):
    """Backend (a): the collection's h5ads matching the artifact criteria and the implied label filter."""
    import bionty as bt

    organism = bt.Organism.filter(ontology_id=spec.organism).first()
    queryset = collection.artifacts.filter(suffix=".h5ad")
    if organism is not None:
        queryset = queryset.filter(organisms=organism)
    wanted = spec.artifacts
    if "description_contains" in wanted:
        queryset = queryset.filter(description__icontains=wanted["description_contains"])
    if "min" in wanted.get("size", {}):
        queryset = queryset.filter(size__gte=wanted["size"]["min"])
    if "max" in wanted.get("size", {}):
        queryset = queryset.filter(size__lte=wanted["size"]["max"])
    if "created_by" in wanted:
        queryset = queryset.filter(created_by__handle__in=wanted["created_by"])
    if "key_patterns" in wanted:
        queryset = _matching_keys(queryset, wanted["key_patterns"])
    for criterion in criteria:
        queryset = _label_prefilter(ln, queryset, criterion)
    return queryset.distinct().order_by("key", "id")


def _matching_keys(queryset, patterns: list[str]):
    """The artifacts whose key matches one of the glob patterns, matched here: `fnmatch.translate`'s regex
    dialect is Python's, which PostgreSQL's regular expressions refuse."""
    matching = [
        i
        for i, key in queryset.values_list("id", "key")
        if any(fnmatch.fnmatchcase(key, p) for p in patterns)
    ]
    return queryset.filter(id__in=matching)


def manifest(artifacts) -> pd.DataFrame:
    """One row per artifact: what to fetch, and the identity its slice depends on (three queries in all)."""
    dataset_ids = dict(
        artifacts.filter(json_values__feature__name="dataset_id").values_list("uid", "json_values__value")
    )
    rows = [
        {
            "uid": artifact.uid,
            "key": artifact.key,
            "version": artifact.version_tag or "",
            "hash": artifact.hash,
            "size": artifact.size,
            "n_obs": artifact.n_observations,
            "dataset_id": dataset_ids.get(artifact.uid, artifact.uid),
            "title": artifact.description or "",
            "path": str(artifact.path),
            "storage_root": artifact.storage.root,
        }
        for artifact in artifacts.select_related("storage")
    ]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def fetch(entry, storage: dict) -> Path:
    """An artifact's file, checked against the registry's size and hash (manifest row `entry`).

    A file in local storage is read in place (as `Artifact.cache()` would); a file in object storage is
    downloaded once into the cache (`storage["cache_dir"]`, default lamindb's), mirroring its bucket path as
    lamindb's cache does (`cellquery.fetch`).
    """
    from cellquery.fetch import cached_copy, intact
    from cellquery.storage import filesystem, is_remote

    if not is_remote(entry["path"]):
        path = Path(entry["path"])
        if not intact(path, entry):
            raise SourceError(
                f"artifact {entry['uid']} ({entry['key']}): stored file {path} "
                "does not match its registry size and hash"
            )
        return path
    fs = filesystem(entry["storage_root"], storage["object_storage"])
    return cached_copy(entry, cached_path(entry, storage), fs, remote_path(entry))


def remote_path(entry) -> str:
    """An artifact's object as s3fs names it: `bucket/key`."""
    return entry["path"].split("://", 1)[1]


def cached_path(entry, storage: dict) -> Path:
    """Where the copy of an artifact in object storage is kept: its bucket path under the cache."""
    return cache_dir(storage) / remote_path(entry)


def cache_dir(storage: dict) -> Path:
    """Where downloads go: the `cache_dir` setting, or lamindb's cache directory."""
    if storage["cache_dir"]:
        return Path(storage["cache_dir"]).expanduser().resolve()
    from lamindb_setup import settings

    return Path(settings.cache_dir)
