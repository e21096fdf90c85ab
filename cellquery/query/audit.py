"""Audit an instance for what a crash could leave: records without files, files without records, results
without lineage. `python -m cellquery audit` prints the problems; none is the expected state."""

from __future__ import annotations

import re
from pathlib import Path

from cellquery.files.layout import EXPORT_SUFFIXES
from cellquery.query.registration import REGISTER_KEY, RESULT_FEATURES

ARTIFACT_FILE = re.compile(r"([0-9A-Za-z]{20})(\..+)?")  # <uid><suffix>; lamin.db and others are not


def registry_problems(ln) -> list[str]:
    """Every inconsistency found, one line each (empty when the registry is whole)."""
    artifacts = list(ln.Artifact.objects.select_related("storage", "run__transform"))
    return [
        *_records_without_files(artifacts),
        *_files_without_records(ln, {a.uid for a in artifacts}),
        *_results_without_lineage(ln, artifacts),
        *_results_taken_over(artifacts),
    ]


def _is_local(path) -> bool:
    return "://" not in str(path)


def _records_without_files(artifacts) -> list[str]:
    problems = []
    for artifact in artifacts:
        if artifact._storage_ongoing:
            problems.append(f"artifact {artifact.uid} ({artifact.key}): its file was never completely stored")
        elif _is_local(artifact.path) and not Path(artifact.path).exists():
            problems.append(f"artifact {artifact.uid} ({artifact.key}): no file at {artifact.path}")
    return problems


def _files_without_records(ln, uids: set[str]) -> list[str]:
    """Files in the instance's own local storage locations that no artifact record claims (a source's
    location, recorded for its artifacts, holds the source's files)."""
    problems = []
    own = ln.Storage.filter(instance_uid=ln.setup.settings.instance.uid)
    for root in own.values_list("root", flat=True):
        if not _is_local(root):
            continue
        for path in sorted((Path(root) / ".lamindb").glob("*")):
            uid = ARTIFACT_FILE.fullmatch(path.name)
            if uid and uid.group(1) not in uids:
                problems.append(f"stored file {path} has no artifact record")
    return problems


def _results_without_lineage(ln, artifacts) -> list[str]:
    """cellquery results need their register run, its workflow run, inputs and spec digest (held by the
    h5ad; its exports, `output.formats`, share its run)."""
    problems = []
    for artifact in artifacts:
        registered = artifact.run is not None and artifact.run.transform.key == REGISTER_KEY
        if not registered:
            if (artifact.description or "").startswith("cellquery result"):
                problems.append(f"result {artifact.uid} ({artifact.key}) has no register run")
            continue
        values = artifact.features.get_values()
        missing = [
            what
            for what, ok in (
                ("workflow run", artifact.run.initiated_by_run_id is not None),
                ("input artifacts", artifact.run.input_artifacts.exists()),
                ("spec digest", _is_export(artifact) or all(name in values for name in RESULT_FEATURES)),
            )
            if not ok
        ]
        if missing:
            problems.append(f"result {artifact.uid} ({artifact.key}) lacks its {', '.join(missing)}")
    return problems


def _is_export(artifact) -> bool:
    return artifact.key.endswith(tuple(EXPORT_SUFFIXES.values()))


def _results_taken_over(artifacts) -> list[str]:
    """Keys whose versions come from different queries, the later not saying it continues the earlier."""
    by_key: dict[str, list] = {}
    for artifact in artifacts:
        if (
            artifact.run is not None
            and artifact.run.transform.key == REGISTER_KEY
            and not _is_export(artifact)
        ):
            by_key.setdefault(artifact.key, []).append(artifact)
    problems = []
    for key, versions in sorted(by_key.items()):
        owners = [a.features.get_values() for a in sorted(versions, key=lambda a: a.created_at)]
        for earlier, later, number in zip(owners, owners[1:], range(2, len(owners) + 1), strict=False):
            first, then = earlier.get("query_name"), later.get("query_name")
            if then != first and later.get("continues") != first:
                problems.append(
                    f"result key {key}: version {number} is of query {then!r}, the one before of {first!r}"
                )
    return problems
