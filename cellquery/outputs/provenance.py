"""Where a result came from, kept in the file itself (`uns["cellquery"]`, Parquet metadata), so that a copy
far from the registry still tells its story: `python -m cellquery provenance FILE`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from cellquery.errors import UserError
from cellquery.spec.query_spec import file_kind

UNS_KEY = "cellquery"
PACKAGES = ("anndata", "lamindb", "bionty", "tiledbsoma", "cellxgene-census", "scanpy", "numpy", "snakemake")
PARQUET_KEY = b"cellquery"
BUILT_AT = "built_at"  # the one field that differs between two builds of the same content


def provenance(query: dict, manifest: pd.DataFrame, route: str) -> dict:
    """The story of one route's file: spec, instance, collection, census store, datasets, software, time."""
    census = query["census"]
    return {
        "route": route,
        "query": query["name"],
        "spec": query["spec_text"],
        "spec_digest": query["spec_digest"],
        "instance": query["instance"],
        "collection": {k: query["collection"][k] for k in ("key", "version", "uid")},
        "census": {"key": census["key"], "uid": census["uid"], "version": query["collection"]["version"]},
        "datasets": _datasets(manifest),
        "software": {"cellquery": _version("cellquery"), **{name: _version(name) for name in PACKAGES}},
        BUILT_AT: datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _datasets(manifest: pd.DataFrame) -> dict:
    """Per matched dataset: its artifact's uid, version, hash and key, and the cells the query selects."""
    columns = ["uid", "version", "hash", "key", "title", "selected_cells"]
    return {
        str(row["dataset_id"]): {c: (int(row[c]) if c == "selected_cells" else str(row[c])) for c in columns}
        for _, row in manifest.iterrows()
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def read_provenance(path: str | Path) -> dict:
    """The provenance a result file holds: an h5ad, an AnnData zarr store or an obs Parquet file. A path that
    is none of them (a FIFO, a folder of something else, a damaged or foreign file) is one line."""
    path = Path(path)
    if not (path.is_file() or path.is_dir()):
        raise UserError(f"provenance: {path} is a {file_kind(path)}, not a result file")
    kind, reader = (
        ("an obs Parquet file", _parquet_provenance)
        if path.suffix == ".parquet"
        else ("an AnnData zarr store", _zarr_provenance)
        if path.is_dir()
        else ("an h5ad file", _h5ad_provenance)
    )
    try:
        return reader(path)
    except (OSError, ValueError, KeyError, TypeError) as error:  # h5py, zarr, pyarrow, anndata on a bad file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"provenance: {path} cannot be read as {kind}: {reason}") from None


def _parquet_provenance(path: Path) -> dict:
    import pyarrow.parquet as pq

    stored = pq.read_schema(path).metadata or {}
    return json.loads(stored[PARQUET_KEY]) if PARQUET_KEY in stored else {}


def _zarr_provenance(path: Path) -> dict:
    import anndata as ad
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return ad.io.read_elem(group["uns"][UNS_KEY]) if UNS_KEY in group.get("uns", {}) else {}


def _h5ad_provenance(path: Path) -> dict:
    import anndata as ad

    with h5py.File(path, "r") as f:
        return ad.io.read_elem(f["uns"][UNS_KEY]) if "uns" in f and UNS_KEY in f["uns"] else {}


def describe(story: dict) -> str:
    """The provenance as text to read: a line per fact, the spec as it was written."""
    lines = [
        f"query {story['query']} (spec digest {story['spec_digest']}), {story['route']} route, "
        f"built {story[BUILT_AT]}",
        f"instance {story['instance']['slug']} ({story['instance']['storage_root']})",
        f"collection {story['collection']['key']} {story['collection']['version']} "
        f"({story['collection']['uid']})",
        f"census store {story['census']['key']} ({story['census']['uid']})",
        f"{len(story['datasets'])} datasets:",
    ]
    for dataset_id, entry in story["datasets"].items():
        lines.append(
            f"  {dataset_id}: artifact {entry['uid']} version {entry['version']} hash {entry['hash']}, "
            f"{entry['selected_cells']} cells selected ({entry['title']})"
        )
    lines.append("software: " + ", ".join(f"{k} {v}" for k, v in story["software"].items()))
    lines += ["spec:", *("  " + line for line in story["spec"].rstrip("\n").splitlines())]
    return "\n".join(lines)


def as_json(story: dict) -> str:
    """Provenance as read from a file (numpy scalars and arrays) as JSON."""
    return json.dumps(story, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def content_digest(path: str | Path) -> str:
    """A digest of an h5ad's content but for its build time: two builds of the same data agree."""
    digest = hashlib.sha256()
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: _digest_item(digest, name, item))
    return digest.hexdigest()[:32]


def _digest_item(digest, name: str, item) -> None:
    if name == f"uns/{UNS_KEY}/{BUILT_AT}":
        return
    digest.update(name.encode() + json.dumps(sorted(map(str, item.attrs.items()))).encode())
    if isinstance(item, h5py.Dataset):
        for start in range(0, item.shape[0] if item.shape else 1, 2**20):
            part = np.asarray(item[start : start + 2**20] if item.shape else item[()])
            if part.dtype.kind == "O":  # strings: their bytes, not the objects' addresses
                part = np.asarray([v if isinstance(v, bytes) else str(v).encode() for v in part.ravel()])
            digest.update(part.tobytes())
