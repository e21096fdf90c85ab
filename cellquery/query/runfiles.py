"""The files a query's steps pass on: the resolved query (query.json) and the manifest (manifest.tsv)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import pandas as pd

from cellquery.spec.criteria import Criterion

# The shape of query.json and manifest.tsv: a `resolve` param, so a cellquery that changes it re-resolves.
RESOLVED_FORMAT = (
    8  # 7: query.json records the census release (`census.release`); 8: and the manifest's digest
)
# manifest columns read as text whatever they hold (an all-digit uid, an empty region)
TEXT_COLUMNS = ("version", "hash_type", "storage_uid", "storage_region", "storage_instance_uid")
READ_PLAN = ["fetch", "download_bytes", "stream_bytes"]  # manifest columns: how each artifact is read


def read_query(path: Path) -> dict:
    """The resolved query written by `resolve`: criteria, gene ids, collection and census store."""
    return json.loads(Path(path).read_text())


def criteria_of(query: dict) -> list[Criterion]:
    return [Criterion.from_dict(c) for c in query["criteria"]]


def read_manifest(path: Path | io.StringIO) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={column: str for column in TEXT_COLUMNS}, keep_default_na=False)


MANIFEST_DIGEST = "manifest_sha256"  # query.json's record of the manifest's bytes as resolve wrote them
# What every step reads of query.json: a file without these is damaged
QUERY_KEYS = ("name", "spec_digest", "criteria", "gene_ids", "census", "collection", "storage", "organism")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolution_damage(query_path: Path, manifest_path: Path) -> str | None:
    """What makes a query's `resolve` outputs unreadable by the steps after it (a file cut short, edited by
    hand, or written by a disk that failed): the file and why, in one phrase; None when both are sound or
    neither exists. query.json is checked for its keys, the manifest against the digest query.json holds."""
    if not query_path.exists() and not manifest_path.exists():
        return None
    try:
        problem = _query_damage(query := read_query(query_path))
    except (OSError, ValueError) as error:
        problem = _reason(error)
    if problem:
        return f"{query_path}: {problem}"
    try:
        problem = _manifest_damage(manifest_path, query.get(MANIFEST_DIGEST))
    except OSError as error:
        problem = _reason(error)
    return f"{manifest_path}: {problem}" if problem else None


def _reason(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _query_damage(query) -> str | None:
    if not isinstance(query, dict):
        return "not a JSON object"
    missing = [key for key in QUERY_KEYS if key not in query]
    return f"lacks {', '.join(missing)}" if missing else None


def _manifest_damage(path: Path, digest: str | None) -> str | None:
    """A manifest whose bytes are not those resolve wrote (a query.json from before digests: whether it
    reads)."""
    if digest is not None:
        return None if file_digest(path) == digest else "its content is not what resolve wrote"
    try:
        read_manifest(path)
    except ValueError as error:  # pandas' ParserError is a ValueError
        return _reason(error)
    return None


def discard_if_damaged(query_path: Path, manifest_path: Path, receipt_path: Path) -> None:
    """Remove a query's damaged `resolve` outputs and its receipt, saying so in one line: Snakemake reruns
    every step of the query (a missing intermediate alone would not make it), and register finds the
    result's identical content registered already."""
    damage = resolution_damage(query_path, manifest_path)
    if damage:
        print(f"cellquery: warning: {damage}: the query is resolved and built again", file=sys.stderr)
        for path in (query_path, manifest_path, receipt_path):
            path.unlink(missing_ok=True)
