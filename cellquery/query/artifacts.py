"""Backend (a): find the artifacts a query needs in a LaminDB instance; fetch them, integrity-checked."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

import pandas as pd

from cellquery.errors import SourceError, SpecError
from cellquery.spec.criteria import Criterion
from cellquery.spec.query_spec import ONTOLOGY_COLUMNS, ULABEL_COLUMNS, QuerySpec, suggest, unknown_values

MANIFEST_COLUMNS = [
    "uid",
    "key",
    "version",
    "hash",
    "hash_type",
    "key_is_virtual",
    "size",
    "n_obs",
    "dataset_id",
    "title",
    "path",
    "storage_root",
    "storage_uid",
    "storage_region",
    "storage_instance_uid",
]
LINKS = {id_column: link for id_column, _, link in ONTOLOGY_COLUMNS.values()}

log = logging.getLogger(__name__)


def collection_for(ln, spec: QuerySpec):
    """The named collection at the spec's version, or its latest version."""
    return collection_version(ln, spec.source["collection"], spec.source.get("version"), "source.")


def collection_version(ln, key: str, version: str | None, where: str = ""):
    """The collection `key` at `version`, or its latest version; an unknown key or version: one line, its
    key prefixed by `where`."""
    versions = ln.Collection.filter(key=key)
    if not versions.exists():
        keys = ln.Collection.filter().values_list("key", flat=True)
        raise SpecError(f"{where}collection: unknown collection {key!r}{suggest(key, keys)}")
    if version is None:
        return versions.filter(is_latest=True).first()
    match = versions.filter(version_tag=version).first()
    if match is None:
        tags = sorted(v for v in versions.values_list("version_tag", flat=True) if v)
        raise SpecError(
            f"{where}version: collection {key!r} has no version {version!r}{suggest(version, tags)} "
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
    """Where a census store artifact lives, as jobs open it (`cellquery.query.census_route.open_store`), and
    what its record in the target needs (`cellquery.instances.target.record_inputs`)."""
    storage = storage_fields(store.storage)
    return {
        "key": store.key,
        "uid": store.uid,
        "path": str(store.path),
        "root": storage["storage_root"],
        "region": storage["storage_region"],
        "record": {
            "hash": store.hash,
            "hash_type": store._hash_type,
            "key_is_virtual": store._key_is_virtual,
            "size": store.size,
            "n_files": store.n_files,
            "version": store.version_tag or "",
            "title": store.description or "",
            **storage,
        },
    }


def storage_fields(storage) -> dict:
    """A storage location as the manifest records it: where files are read, and its identity."""
    return {
        "storage_root": storage.root,
        "storage_uid": storage.uid,
        "storage_region": storage.region or "",
        "storage_instance_uid": storage.instance_uid or "",
    }


def check_users(ln, spec: QuerySpec) -> None:
    """Every user handle of `artifacts.created_by` is a user of the instance."""
    known = set(ln.User.filter().values_list("handle", flat=True))
    unknown = [h for h in spec.artifacts.get("created_by", []) if h not in known]
    if unknown:

        def described(handle: str) -> str:
            return f"unknown user {handle!r}{suggest(handle, sorted(known))}"

        raise unknown_values("artifacts.created_by", unknown, described)


def _label_prefilter(ln, queryset, criterion: Criterion):
    """Narrow artifacts by the labels `in` criteria imply; `not_in` and others cannot exclude a file, nor
    can labels exclude a file that has none of that kind (its curation failed: the census store holds its
    cells and decides)."""
    from django.db.models import Q

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
        linked = Q(**{f"{link}__ontology_id__in": ids}) | Q(**{f"{link}__isnull": True})
        return queryset.filter(linked).distinct()
    if criterion.column in ULABEL_COLUMNS:
        label_type = ULABEL_COLUMNS[criterion.column]
        labels = ln.ULabel.filter(type__name=label_type, name__in=list(criterion.values))
        typed = queryset.filter(ulabels__type__name=label_type).values("id")
        return queryset.filter(Q(ulabels__in=labels) | ~Q(id__in=typed)).distinct()
    return queryset


def artifact_query(ln, spec: QuerySpec, collection, criteria: list[Criterion]):
    """Backend (a): the collection's h5ads matching the artifact criteria and the implied label filter."""
    from django.db.models import Q

    organism = ln.bionty.Organism.filter(ontology_id=spec.organism).first()
    queryset = collection.artifacts.filter(suffix=".h5ad")
    if organism is not None:  # an artifact with no organism (failed curation): the census store decides
        queryset = queryset.filter(Q(organisms=organism) | Q(organisms__isnull=True))
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
    """One row per artifact: what to fetch, and the identity its slice depends on (two queries in all).
    The dataset id is the key's stem (`cell-census/<version>/h5ads/<dataset_id>.h5ad`), as the public
    instance keeps no dataset id of its own; `n_obs` may be empty (`with_census_datasets` fills it)."""
    rows = [
        {
            "uid": artifact.uid,
            "key": artifact.key,
            "version": artifact.version_tag or "",
            "hash": artifact.hash,
            "hash_type": artifact._hash_type or "",
            "key_is_virtual": artifact._key_is_virtual,
            "size": artifact.size,
            "n_obs": artifact.n_observations,
            "dataset_id": Path(artifact.key or artifact.uid).stem,
            "title": artifact.description or "",
            "path": str(artifact.path),
            **storage_fields(artifact.storage),
        }
        for artifact in artifacts.select_related("storage")
    ]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def with_census_datasets(table: pd.DataFrame, store: dict, settings: dict | None = None) -> pd.DataFrame:
    """The manifest checked against the census store's `census_info/datasets`: artifacts whose dataset the
    store does not know are named in one warning (no cells come from them), and a missing `n_obs` (the
    registry's `n_observations` is empty for some datasets) is the store's cell count of the dataset."""
    from cellquery.query.census_route import open_store

    with open_store(store, settings) as census:
        datasets = census["census_info"]["datasets"].read(
            column_names=["dataset_id", "dataset_total_cell_count"]
        )
        counts = datasets.concat().to_pandas().set_index("dataset_id")["dataset_total_cell_count"]
    unknown = table.loc[~table["dataset_id"].isin(counts.index), "key"]
    if len(unknown):
        log.warning(
            "%d artifacts name datasets the census store %s does not hold (no cells come from them): %s",
            len(unknown),
            store["key"],
            ", ".join(unknown),
        )
    table = table.copy()
    registered = pd.to_numeric(table["n_obs"], errors="coerce")
    table["n_obs"] = registered.fillna(table["dataset_id"].map(counts)).fillna(0).astype(int)
    return table


def fetch(entry, storage: dict) -> Path:
    """An artifact's file, checked against the registry's size and hash of its type (manifest row `entry`).

    A file in local storage is read in place (as `Artifact.cache()` would); a file in object storage is
    downloaded once into the cache (`storage["cache_dir"]`, default lamindb's), mirroring its bucket path as
    lamindb's cache does (`cellquery.storage.fetch`).
    """
    from cellquery.storage.fetch import cached_copy
    from cellquery.storage.integrity import mismatch
    from cellquery.storage.settings import filesystem, is_remote, patience_of, region_of

    if not is_remote(entry["path"]):
        path, where = Path(entry["path"]), f"artifact {entry['uid']} ({entry['key']})"
        if not path.is_file():
            raise SourceError(f"{where}: its stored file {path} is missing (the instance's storage lost it)")
        if problem := mismatch(path, entry):
            raise SourceError(
                f"{where}: stored file {path} does not match its registry size and hash ({problem})"
            )
        return path
    fs = filesystem(entry["storage_root"], storage["object_storage"], region=region_of(entry))
    patience = patience_of(storage)
    return cached_copy(entry, cached_path(entry, storage), fs, remote_path(entry), patience)


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
