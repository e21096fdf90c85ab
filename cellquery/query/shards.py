"""Step shard: the artifacts of one shard job fetched (hash-checked) or streamed, and sliced (backend b)."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from cellquery.errors import FetchError
from cellquery.files.atomic import write_json
from cellquery.files.layout import QueryFiles, slice_content, slice_path
from cellquery.instances.lamin import use_settings
from cellquery.instances.source import Source
from cellquery.query.runfiles import criteria_of, read_manifest, read_query
from cellquery.spec.query_spec import QuerySpec
from cellquery.storage.fetch import artifact_lock
from cellquery.storage.integrity import seal, sealed
from cellquery.workflow.jobs import at_work

log = logging.getLogger(__name__)

MAX_AUTO_SHARD = 100
AUTO_SHARDS = 8
MIN_SHARD_BYTES = 2**29
MAX_SHARD_BYTES = 2**33
FETCH_THREADS = 2  # downloads per shard job, overlapping its slicing


def plan_shards(manifest: pd.DataFrame, setting: str | int) -> list[list[str]]:
    """Artifact uids per shard job, in manifest order: `setting` artifacts each, or `auto`.

    Auto fills shards up to a byte budget (an eighth of the total, kept between 512 MiB and 8 GiB) and
    at most 100 artifacts, so small files share a job start and large ones spread over cores. The plan
    depends on the manifest alone: cluster jobs re-plan the workflow and must find the same shards.
    """
    uids = list(manifest["uid"])
    if setting != "auto":
        size = int(setting)
        return [uids[i : i + size] for i in range(0, len(uids), size)]
    budget = min(MAX_SHARD_BYTES, max(MIN_SHARD_BYTES, int(manifest["size"].sum()) // AUTO_SHARDS))
    plan, used = [[]], 0
    for uid, size in zip(uids, manifest["size"], strict=True):
        if plan[-1] and (used + size > budget or len(plan[-1]) == MAX_AUTO_SHARD):
            plan.append([])
            used = 0
        plan[-1].append(uid)
        used += int(size)
    return plan if uids else []


def slice_is_current(path: Path, content: str, cells_digest: str) -> bool:
    """A slice written for this file (`layout.slice_content`) and these cell criteria, and still as it was
    written (`integrity.sealed`), is reused, not recomputed."""
    import anndata as ad
    import h5py

    from cellquery.query.slicing import TOTALS_KEY

    if not path.exists():
        return False
    if not sealed(path):  # cut short or altered since it was written (or from before slices were sealed)
        log.warning("slice %s is not as it was written: made again", path)
        return False
    with h5py.File(path, "r") as f:
        source = ad.io.read_elem(f["uns/source"]) if "uns/source" in f else {}
        counted = f"uns/{TOTALS_KEY}" in f  # slices made before cells' totals were kept are made again
    return source.get("content") == content and source.get("cells_digest") == cells_digest and counted


def process_shard(spec: QuerySpec, source: Source, query_path: Path, manifest_path: Path, uids, out: Path):
    """Fetch (hash-checked) and slice each artifact of one shard; a current slice is kept as it is.

    Files in object storage are downloaded by FETCH_THREADS threads while the files already here are
    sliced, in manifest order. Slices are shared by every query asking the same of an artifact
    (`layout.slice_path`); a lock per slice makes it once when two queries' jobs want it at once.
    """
    from cellquery.query import artifacts

    query = read_query(query_path)
    table = read_manifest(manifest_path).set_index("uid", drop=False)
    files = QueryFiles(spec.name)
    use_settings(source.settings_env())  # lamindb_setup (hashes, its cache) as `resolve` saw it
    at_work()
    contents = {uid: slice_content(table.loc[uid]) for uid in uids}
    slices = {uid: slice_path(spec.cells_digest, contents[uid]) for uid in uids}
    current = {uid for uid in uids if slice_is_current(slices[uid], contents[uid], spec.cells_digest)}
    for uid in current:
        log.info("artifact %s: slice is current", uid)
    todo = [uid for uid in uids if uid not in current]
    streamed = {uid for uid in todo if table.loc[uid, "fetch"] == "stream"}
    reads = {uid: {"read": "slice current", "bytes": 0} for uid in current}
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        downloads = [uid for uid in todo if uid not in streamed]
        copies = {uid: pool.submit(artifacts.fetch, table.loc[uid], query["storage"]) for uid in downloads}
        for number, uid in enumerate(todo, start=1):
            with artifact_lock(slices[uid]):  # another query's job may be making the same slice
                if slice_is_current(slices[uid], contents[uid], spec.cells_digest):
                    log.info("artifact %s: slice made meanwhile by another job", uid)
                    reads[uid] = {"read": "slice current", "bytes": 0}
                    continue
                try:
                    if uid in streamed:
                        moved = _streamed_slice(query, spec, table.loc[uid], files, slices[uid])
                        reads[uid] = {"read": "stream", "bytes": moved}
                    else:
                        copy = copies[uid].result()
                        _slice(query, spec, table.loc[uid], copy, files, slices[uid], {"path": str(copy)})
                        reads[uid] = read_of(table.loc[uid])
                except BaseException:  # the job fails: downloads not begun are not begun
                    pool.shutdown(cancel_futures=True)
                    raise
            log.info("artifact %s sliced [%d/%d]", uid, number, len(todo))
    write_json(out, {"uids": list(uids), "slices": [str(slices[uid]) for uid in uids], "reads": reads})


def read_of(entry) -> dict:
    """How an artifact not streamed was read: in place (local storage; its bytes are not counted), or from
    a copy downloaded for this query (its bytes: 0 when resolve found the copy cached already)."""
    if entry["fetch"] == "local":
        return {"read": "in place", "bytes": None}
    return {"read": "download", "bytes": int(entry["download_bytes"])}


def _streamed_slice(query: dict, spec: QuerySpec, entry, files: QueryFiles, out: Path) -> int:
    """Slice an artifact in object storage from the byte ranges the slice needs
    (`cellquery.storage.streaming`); returns the bytes it moved."""
    from cellquery.query.artifacts import remote_path
    from cellquery.storage.settings import filesystem, patience_of, region_of
    from cellquery.storage.streaming import streamed

    def read(handle) -> None:
        check_size(handle.size, entry)
        _slice(query, spec, entry, handle, files, out, {"path": entry["path"], "fetch": "stream"})

    fs = filesystem(entry["storage_root"], query["storage"]["object_storage"], region=region_of(entry))
    label, patience = f"artifact {entry['uid']} ({entry['key']})", patience_of(query["storage"])
    _, moved = streamed(read, fs, remote_path(entry), label, patience)
    receipt = files.read_receipt(entry["uid"])
    write_json(receipt, {**json.loads(receipt.read_text()), "bytes_moved": moved})
    return moved


def check_size(size: int, entry) -> None:
    """A streamed file is checked by size (its hash would need the whole file); its slice is validated."""
    if size != int(entry["size"]):
        raise FetchError(
            f"artifact {entry['uid']} ({entry['key']}): {entry['path']} holds {size} bytes, "
            f"the registry {entry['size']}"
        )


def _slice(query: dict, spec: QuerySpec, entry, source, files: QueryFiles, out: Path, receipt: dict) -> None:
    from cellquery.cellxgene.joinkey import dataset_label
    from cellquery.cellxgene.release import recorded
    from cellquery.query.slicing import slice_dataset

    uid = entry["uid"]
    write_json(files.read_receipt(uid), {"uid": uid, **receipt})
    slice_dataset(
        source,
        criteria_of(query),
        dataset_id=entry["dataset_id"],
        organism=query["organism"],
        release=recorded(query["census"]),
        obs_columns=spec.slice_obs_columns,
        gene_ids=query["gene_ids"],
        out=out,
        provenance={"uid": uid, "content": slice_content(entry), "cells_digest": spec.cells_digest},
        layers=query["layers"],
        label=dataset_label(entry["dataset_id"], entry["title"], entry["key"]),
    )
    seal(out)
