"""The files a query's steps pass on: the resolved query (query.json) and the manifest (manifest.tsv)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from cellquery.criteria import Criterion

# The shape of query.json and manifest.tsv: a `resolve` param, so a cellquery that changes it re-resolves.
RESOLVED_FORMAT = 7  # 7: query.json records the census release (`census.release`)
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
