"""Register a validated result as a versioned LaminDB artifact with its lineage and labels."""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from cellquery.errors import SpecError
from cellquery.files.atomic import write_json
from cellquery.files.layout import EXPORT_SUFFIXES, QueryFiles
from cellquery.instances.lamin import retrying_lost_database
from cellquery.instances.owners import check_owner, record_owner
from cellquery.instances.target import Target, record_inputs
from cellquery.outputs.provenance import content_digest
from cellquery.query.runfiles import read_manifest, read_query
from cellquery.spec.query_spec import MULTI_VALUED_COLUMNS, ONTOLOGY_COLUMNS, ULABEL_COLUMNS, QuerySpec, terms
from cellquery.workflow.faults import failpoint
from cellquery.workflow.jobs import at_work

log = logging.getLogger(__name__)

WORKFLOW_KEY = "cellquery"
REGISTER_KEY = "cellquery/register"
RESULT_FEATURES = {"spec_digest": str, "query_name": str, "content_digest": str}
OWNER_FEATURES = {
    "spec_file": str,
    "continues": str,
}  # whose results a key holds (`cellquery.instances.owners`)
LOCK_KEY = 0x63656C6C  # "cell": the advisory lock cellquery takes on PostgreSQL


def _transform(ln, key: str, description: str):
    existing = ln.Transform.filter(key=key).first()
    return existing or ln.Transform(key=key, kind="pipeline", description=description).save()


def _feature(ln, name: str, dtype):
    return ln.Feature.filter(name=name).first() or ln.Feature(name=name, dtype=dtype).save()


def _link_labels(ln, artifact, obs: pd.DataFrame, organism: str) -> None:
    """Link the result to the ontology terms and labels its cells carry, as curated datasets are; terms and
    labels the target lacks are added from the result's own columns."""
    import bionty as bt

    for label, (id_column, registry_name, link) in ONTOLOGY_COLUMNS.items():
        registry = getattr(bt, registry_name)
        if id_column in obs.columns:
            records = _terms(registry, registry_name, _names_by_id(obs, id_column, label))
        elif label in obs.columns:  # the spec kept only the label column
            names = {name for value in set(obs[label].astype(str)) for name in _terms_of(id_column, value)}
            records = list(registry.filter(name__in=names))
        else:
            continue
        if records:
            getattr(artifact, link).add(*records)
    for column, type_name in ULABEL_COLUMNS.items():
        if column in obs.columns:
            artifact.ulabels.add(*_labels(ln, type_name, set(obs[column].astype(str))))
    species = bt.Organism.filter(ontology_id=organism)
    if species.exists():
        artifact.organisms.add(*species)


def _names_by_id(obs: pd.DataFrame, id_column: str, label: str) -> dict[str, str]:
    """Each term id of the result with its label (the id itself when the label column was left out); a
    multi-valued column's values give each of their terms."""
    ids = obs[id_column].astype(str)
    names = obs[label].astype(str) if label in obs.columns else ids
    pairs = dict(zip(ids, names, strict=True))
    return {
        term: name
        for value, label_value in pairs.items()
        for term, name in zip(_terms_of(id_column, value), _terms_of(id_column, label_value), strict=True)
    }


def _terms_of(id_column: str, value: str) -> list[str]:
    """A value's terms: each of a multi-valued column's, else the value itself."""
    return terms(value) if id_column in MULTI_VALUED_COLUMNS else [value]


def _terms(registry, registry_name: str, names_by_id: dict[str, str]) -> list:
    """The records of these term ids, made for ids of the registry's own ontology the target lacks."""
    from cellquery.cellxgene.ontology import BIONTY_SOURCES, prefix_of

    found = {r.ontology_id: r for r in registry.filter(ontology_id__in=list(names_by_id))}
    for term_id, name in names_by_id.items():
        own = BIONTY_SOURCES.get(prefix_of(term_id), ("",))[0] == registry_name
        if term_id not in found and own:
            found[term_id] = registry(ontology_id=term_id, name=name).save()
    return list(found.values())


def _labels(ln, type_name: str, names: set[str]) -> list:
    """The labels of a type (made where the target lacks them)."""
    label_type = ln.ULabel.filter(name=type_name, is_type=True).first()
    label_type = label_type or ln.ULabel(name=type_name, is_type=True).save()
    found = {u.name: u for u in ln.ULabel.filter(type=label_type, name__in=names)}
    return [found.get(name) or ln.ULabel(name=name, type=label_type).save() for name in sorted(names)]


def _save_new_version(ln, spec: QuerySpec, candidate, inputs: dict, obs: pd.DataFrame, shape, content: str):
    """The new version with its lineage (a workflow run and a register run, inputs) and its labels.

    The run's inputs (`inputs["records"]`) are the datasets that contributed cells and the census store,
    recorded from the source; datasets that matched the artifact query but contributed no cell are named
    in its params, with the source instance.
    """
    workflow = _transform(ln, WORKFLOW_KEY, "cellquery Snakemake workflow")
    parent = ln.Run(workflow, params={"spec": spec.data, "spec_digest": spec.digest}).save()
    run = ln.Run(
        _transform(ln, REGISTER_KEY, "cellquery: register a validated result"),
        params={
            "spec_digest": spec.digest,
            "query": spec.name,
            "source": inputs["source"],
            "matched_without_cells": inputs["idle"],
        },
        initiated_by_run=parent,
    ).save()
    run.input_artifacts.add(*inputs["records"])
    previous = ln.Artifact.filter(key=spec.output_key).count()
    candidate.run = run
    candidate.version_tag = str(previous + 1)
    candidate.n_observations = shape[0]
    artifact = candidate.save()
    failpoint("register")
    _link_labels(ln, artifact, obs, spec.organism)
    for name, dtype in {**RESULT_FEATURES, **OWNER_FEATURES}.items():
        _feature(ln, name, dtype)
    artifact.features.add_values(
        {
            "spec_digest": spec.digest,
            "query_name": spec.name,
            "content_digest": content,
            "spec_file": str(spec.path.resolve()),
            "continues": spec.continues or "",
        }
    )
    finished = datetime.now(UTC)
    for record in (run, parent):
        record.finished_at = finished
        record.save()
    return artifact


def _same_content_under_key(ln, key: str, file_hash: str, content: str):
    """The version under `key` whose content equals a file's, if there is one: the same bytes (`file_hash`,
    lamindb's), or the same result built at another time (`content`: `provenance.content_digest`)."""
    same_bytes = ln.Artifact.filter(key=key, hash=file_hash).first()
    if same_bytes:
        return same_bytes
    versions = ln.Artifact.filter(key=key).order_by("-created_at")
    return next((a for a in versions if a.features.get_values().get("content_digest") == content), None)


def collection_key(output_key: str) -> str:
    """The key of the collection that serves a result to loaders: its output key without `.h5ad`."""
    return output_key.removesuffix(".h5ad")


def check_output_key(ln, spec: QuerySpec) -> None:
    """The output key (and its collection key) must be free or hold earlier versions of a cellquery result."""
    check_key_rules(spec)
    owned = [
        ("artifact", spec.output_key, ln.Artifact),
        ("collection", collection_key(spec.output_key), ln.Collection),
    ]
    for kind, key, registry in owned:
        for record in registry.filter(key=key).select_related("run__transform"):
            if record.run is None or record.run.transform.key != REGISTER_KEY:
                raise SpecError(
                    f"output.key: {key!r} belongs to {kind} {record.uid}, "
                    "which is not a cellquery result; choose another key"
                )
    parts = spec.output_key.split("/")
    folders = ["/".join(parts[:end]) for end in range(1, len(parts))]
    holder = ln.Artifact.filter(key__in=folders).first()
    if holder is not None:  # a folder artifact, such as a census store
        raise SpecError(
            f"output.key: {spec.output_key!r} lies inside artifact {holder.uid}, stored under "
            f"{holder.key!r}; choose another key"
        )


def check_key_rules(spec: QuerySpec) -> None:
    """Every key the result is registered under, checked by lamindb's own rules (segments, suffix, length)."""
    from pathlib import PurePosixPath

    from lamindb.models import Artifact, Collection
    from lamindb.models.sqlrecord import check_key
    from lamindb_setup.core.canonical_suffix import CanonicalSuffix

    keys = [
        (Artifact, spec.output_key, ".h5ad"),
        *((Artifact, export_key(spec.output_key, f), EXPORT_SUFFIXES[f]) for f in spec.export_formats),
        (Collection, collection_key(spec.output_key), None),
    ]
    for registry, key, suffix in keys:
        length = registry._meta.get_field("key").max_length
        try:
            check_key(key)
        except ValueError as error:
            raise SpecError(f"output.key: lamindb refuses {key!r}: {error}") from None
        if len(key) > length:
            raise SpecError(f"output.key: {key!r} is longer than lamindb's {length} characters")
        read_suffix = CanonicalSuffix.extract_from_path(PurePosixPath(key))[1]
        if suffix and not (read_suffix and suffix.endswith(read_suffix)):
            raise SpecError(f"output.key: lamindb reads no file name with suffix {suffix} in {key!r}")


def result_collection(ln, artifact):
    """The collection of the result artifact under its collection key, made once per result version.

    It is versioned with the result (a new version under the same key), so `Collection.mapped()` serves
    exactly one version of the result to a PyTorch DataLoader.
    """
    key = collection_key(artifact.key)
    existing = ln.Collection.filter(key=key, artifacts=artifact).first()
    if existing is not None:
        return existing
    return ln.Collection(
        artifact,
        key=key,
        description=artifact.description,
        version_tag=artifact.version_tag,
        run=artifact.run,
        skip_hash_lookup=True,  # another key may hold identical content: never take over its collection
    ).save()


@contextmanager
def registry_lock(ln) -> Iterator[None]:
    """One registration at a time per instance: a PostgreSQL advisory lock, or a file lock beside SQLite.

    Both locks die with their process, so a killed registration never blocks the next one.
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        return
    lock_path = Path(connection.settings_dict["NAME"]).with_suffix(".cellquery-register.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def recover(ln, intent: Path) -> None:
    """Undo a registration a killed run left unfinished: its record (if committed) and its stored file."""
    if not intent.exists():
        return
    pending = json.loads(intent.read_text())
    record = ln.Artifact.filter(uid=pending["uid"]).first()
    if record is not None and (record._storage_ongoing or not record.path.exists()):
        for collection in record.collections.all():
            collection.delete(permanent=True)
        record.delete(permanent=True, storage=False)
        log.warning("removed the unfinished registration of %s", pending["uid"])
        record = None
    if record is None:
        for stray in Path(pending["storage_root"], ".lamindb").glob(f"{pending['uid']}*"):
            stray.unlink()
            log.warning("removed %s, stored by a registration that never committed", stray)
    intent.unlink()


def _inputs(manifest: pd.DataFrame, dataset_ids: set[str], census_uid: str) -> dict[str, list[str]]:
    """Artifacts the result was made from (datasets that contributed cells, the census store), and the
    datasets that matched but contributed none."""
    contributed = manifest["dataset_id"].astype(str).isin(dataset_ids)
    return {
        "used": [*manifest.loc[contributed, "uid"], census_uid],
        "idle": list(manifest.loc[~contributed, "uid"]),
    }


def _make_latest(ln, artifact, collection) -> None:
    """The build just made is the latest under its keys, even when it reuses an older version's content.

    lamindb keeps one `is_latest` version per key and revises that one next; `Artifact.get(key=...)` and
    `Collection.get(key=...)` return it.
    """
    for registry, record in ((ln.Artifact, artifact), (ln.Collection, collection)):
        if record.is_latest:
            continue
        registry.filter(key=record.key, is_latest=True).update(is_latest=False)
        registry.filter(uid=record.uid).update(is_latest=True)
        record.is_latest = True
        log.info(
            "%s %s (version %s) is the latest under %s again",
            registry.__name__,
            record.uid,
            record.version_tag,
            record.key,
        )


def export_key(output_key: str, fmt: str) -> str:
    """The registry key of the result in another format: `cellquery/x.h5ad` -> `cellquery/x.zarr`."""
    return output_key.removesuffix(".h5ad") + EXPORT_SUFFIXES[fmt]


def register_export(ln, spec: QuerySpec, path: Path, fmt: str, run) -> dict:
    """The result in another format, saved as an output of the result's run; a result reused (the same
    content) keeps the export its run registered."""
    key = export_key(spec.output_key, fmt)
    artifact = ln.Artifact.filter(key=key, run=run).order_by("-created_at").first()
    reused = artifact is not None
    if not reused:
        candidate = ln.Artifact(
            str(path), key=key, description=f"cellquery result {spec.name} ({fmt})", skip_hash_lookup=True
        )
        candidate.run = run
        candidate.version_tag = str(ln.Artifact.filter(key=key).count() + 1)
        artifact = candidate.save()
    log.info(
        "%s %s: %s version %s", "reused" if reused else "registered", fmt, artifact.uid, artifact.version_tag
    )
    return {
        "uid": artifact.uid,
        "key": key,
        "version": artifact.version_tag,
        "reused": reused,
        "path": str(artifact.path),
    }


def register_result(
    ln,
    spec: QuerySpec,
    result_path: Path,
    query: dict,
    manifest: pd.DataFrame,
    intent: Path,
    exports: dict[str, Path] | None = None,
) -> dict:
    """Save the result under the spec's output key: identical content reuses the existing artifact.

    Under the registry lock and in one database transaction; `intent` names the new record and its file
    until both are committed, so a run killed half-way is undone by the next one.
    """
    import anndata as ad
    from django.db import transaction

    result = ad.read_h5ad(result_path, backed="r")
    obs, shape = result.obs, result.shape
    inputs = _inputs(manifest, set(obs["dataset_id"].astype(str)), query["census"]["uid"])
    inputs["source"] = query["instance"]
    with registry_lock(ln):
        recover(ln, intent)
        candidate = ln.Artifact(  # the file read once for lamindb's hash, once for the content's
            str(result_path),
            key=spec.output_key,
            description=f"cellquery result {spec.name}",
            skip_hash_lookup=True,
        )
        content = content_digest(result_path)
        existing = _same_content_under_key(ln, spec.output_key, candidate.hash, content)
        reused = existing is not None
        if reused:
            artifact = existing
            log.info("identical result already registered as %s", artifact.uid)
            with transaction.atomic():  # results registered before collections existed get theirs
                collection = result_collection(ln, artifact)
                _make_latest(ln, artifact, collection)
        else:  # a new version under this key, even if another key holds the same content
            write_json(intent, {"uid": candidate.uid, "storage_root": str(ln.settings.storage.root)})
            with transaction.atomic():
                inputs["records"] = record_inputs(ln, query, manifest, inputs["used"])
                artifact = _save_new_version(ln, spec, candidate, inputs, obs, shape, content)
                collection = result_collection(ln, artifact)
            intent.unlink()
            log.info("registered %s version %s", artifact.uid, artifact.version_tag)
        with transaction.atomic():
            exported = {
                fmt: register_export(ln, spec, path, fmt, artifact.run)
                for fmt, path in (exports or {}).items()
            }
    return {
        "artifact_uid": artifact.uid,
        "key": artifact.key,
        "version": artifact.version_tag,
        "hash": artifact.hash,
        "n_obs": shape[0],
        "n_vars": shape[1],
        "spec_digest": spec.digest,
        "inputs": inputs["used"],
        "matched_without_cells": inputs["idle"],
        "run_uid": artifact.run.uid if artifact.run else None,
        "collection_uid": collection.uid,
        "reused": reused,
        "path": str(artifact.path),
        "exports": exported,
    }


def register(
    spec: QuerySpec,
    target: Target,
    result: Path,
    query_path: Path,
    manifest_path: Path,
    out: Path,
    exports: list[Path] = (),
):
    """Step register: the validated result saved into the target as a new version (or the same content's),
    with lineage."""
    ln = target.connect()
    at_work()
    query = read_query(query_path)
    intent = QueryFiles(spec.name).register_intent
    manifest = read_manifest(manifest_path)
    formats = dict(zip(spec.export_formats, exports, strict=True))
    check_output_key(ln, spec)
    check_owner(ln, spec)
    receipt = retrying_lost_database(  # repeatable: `recover` and the same-content lookup see a lost try
        lambda: register_result(ln, spec, result, query, manifest, intent, formats),
        f"register {spec.output_key}",
    )
    record_owner(target, spec)
    validation = QueryFiles(spec.name).validation  # written with the result: what each route read
    receipt["bytes_read"] = json.loads(validation.read_text())["bytes_read"] if validation.exists() else None
    write_json(out, receipt)
    return receipt
