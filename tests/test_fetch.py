"""Fetching from object storage against a real S3 server on loopback (SeaweedFS), through a counting proxy
that also injects faults: one download per artifact, resumed after faults, never a partial copy accepted."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import clean_env, lamin_hash

from bench.proxy import CountingProxy
from cellquery.errors import FetchError
from cellquery.storage.fetch import cached_copy
from cellquery.storage.integrity import intact
from cellquery.storage.objectstore import ACCESS_KEY, ObjectServer
from cellquery.storage.settings import filesystem

SIZE = 24 * 2**20


BUCKET = "cellquery-fetch-test"


@pytest.fixture(scope="module")
def server(object_server_root):
    return ObjectServer.at(object_server_root).ensure_running()


@pytest.fixture(scope="module")
def stored(server, ln, tmp_path_factory, monkeypatch_module):  # ln first: lamin_hash imports lamindb
    """A file in the bucket and its manifest row (size and lamindb hash, as the registry holds them)."""
    for name, value in server.uploader_env().items():
        monkeypatch_module.setenv(name, value)
    local = tmp_path_factory.mktemp("source") / "dataset.h5ad"
    local.write_bytes(np.random.default_rng(0).bytes(SIZE))
    fs = filesystem(f"s3://{BUCKET}?endpoint_url={server.endpoint}")
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put_file(str(local), f"{BUCKET}/data/dataset.h5ad")
    return {"uid": "abc", "key": "cellxgene/dataset.h5ad", "size": SIZE, "hash": lamin_hash(local)}


@pytest.fixture
def proxy(server):
    counting = CountingProxy(server.port)
    yield counting
    counting.close()


def fetch(proxy, entry, target):
    fs = filesystem(f"s3://{BUCKET}?endpoint_url={proxy.endpoint}")
    return cached_copy(entry, target, fs, f"{BUCKET}/data/dataset.h5ad")


def test_a_fresh_fetch_moves_the_file_once_and_a_rerun_moves_nothing(proxy, stored, tmp_path):
    target = tmp_path / "cache" / "dataset.h5ad"
    assert fetch(proxy, stored, target) == target and lamin_hash(target) == stored["hash"]
    assert SIZE <= proxy.received < SIZE * 1.05
    proxy.reset()
    fetch(proxy, stored, target)
    assert proxy.received == 0 and not target.with_name("dataset.h5ad.part").exists()


def test_two_fetchers_at_once_download_once_and_neither_reads_a_partial_copy(proxy, stored, tmp_path):
    target = tmp_path / "cache" / "dataset.h5ad"
    seen = []

    def one():
        path = fetch(proxy, stored, target)
        seen.append(intact(path, stored))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [True, True] and SIZE <= proxy.received < SIZE * 1.05


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_a_dropped_connection_and_a_15_s_stall_are_survived(proxy, stored, tmp_path, fault):
    if fault == "drop":
        proxy.faults.drop_after = SIZE // 3
    else:
        proxy.faults.stall_after, proxy.faults.stall_seconds = SIZE // 3, 15.0
    target = tmp_path / "cache" / "dataset.h5ad"
    started = time.monotonic()
    fetch(proxy, stored, target)
    assert intact(target, stored) and SIZE <= proxy.received < SIZE * 1.5
    assert fault == "drop" or time.monotonic() - started >= 15


def test_the_server_down_for_30_s_mid_download_is_survived(server, proxy, stored, tmp_path):
    proxy.faults.stall_after, proxy.faults.stall_seconds = SIZE // 3, 2.0  # holds the download mid-way
    target = tmp_path / "cache" / "dataset.h5ad"
    download = threading.Thread(target=fetch, args=(proxy, stored, target))
    download.start()
    while proxy.received < SIZE // 4:
        time.sleep(0.05)
    server.stop()
    time.sleep(30)
    server.ensure_running()
    download.join()
    assert intact(target, stored) and not target.with_name("dataset.h5ad.part").exists()


def fetch_in_process(server, proxy, stored, target) -> subprocess.Popen:
    """A separate process fetching the artifact (as a shard job does); prints whether its copy is intact."""
    program = (
        "import json, pathlib; from cellquery.storage.fetch import cached_copy; "
        "from cellquery.storage.integrity import intact; "
        "from cellquery.storage.settings import filesystem; "
        f"entry = {stored!r}; fs = filesystem('s3://{BUCKET}?endpoint_url={proxy.endpoint}'); "
        f"path = cached_copy(entry, pathlib.Path({str(target)!r}), fs, '{BUCKET}/data/dataset.h5ad'); "
        "print(json.dumps(intact(path, entry)))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", program], env=clean_env(**server.uploader_env()), stdout=subprocess.PIPE
    )


def test_two_processes_wanting_the_same_artifact_download_it_once(server, proxy, stored, tmp_path):
    target = tmp_path / "cache" / "dataset.h5ad"
    runs = [fetch_in_process(server, proxy, stored, target) for _ in range(2)]
    assert [run.communicate()[0].strip() for run in runs] == [b"true", b"true"]
    assert SIZE <= proxy.received < SIZE * 1.05  # one download, the other process waited for it


def test_a_download_killed_mid_way_leaves_nothing_the_next_fetch_accepts(server, proxy, stored, tmp_path):
    proxy.faults.stall_after, proxy.faults.stall_seconds = SIZE // 2, 10.0
    target = tmp_path / "cache" / "dataset.h5ad"
    part = target.with_name("dataset.h5ad.part")
    run = fetch_in_process(server, proxy, stored, target)
    while not part.exists() or part.stat().st_size < SIZE // 4:  # killed with part of the file written
        time.sleep(0.05)
    run.kill()
    run.wait()
    assert not target.exists()  # only the private .part: nothing a reader could take for the file
    proxy.reset()
    fetch(proxy, stored, target)
    assert intact(target, stored) and proxy.received < SIZE  # resumed from the .part


def test_a_disk_filling_up_mid_download_stops_with_one_line_and_leaves_nothing(proxy, stored, tmp_path):
    small_disk = tmp_path / "small-disk"
    small_disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small_disk)], check=True)
    try:
        with pytest.raises(
            FetchError, match=r"^artifact abc \(cellxgene/dataset.h5ad\): no space left on the disk"
        ):
            fetch(proxy, stored, small_disk / "dataset.h5ad")
        assert not [p for p in small_disk.iterdir() if not p.name.endswith(".lock")]  # no partial copy
    finally:
        subprocess.run(["umount", str(small_disk)], check=True)


def test_a_truncated_copy_left_by_a_killed_client_is_never_accepted(proxy, stored, tmp_path):
    target = tmp_path / "cache" / "dataset.h5ad"
    target.parent.mkdir(parents=True)
    source = filesystem(f"s3://{BUCKET}?endpoint_url={proxy.endpoint}").cat_file(
        f"{BUCKET}/data/dataset.h5ad", start=0, end=SIZE // 2
    )
    target.write_bytes(source)  # what lamindb's cache() leaves: a truncated file with a fresh mtime
    target.with_name("dataset.h5ad.part").write_bytes(source[: SIZE // 4])  # and a private partial copy
    proxy.reset()
    fetch(proxy, stored, target)
    assert intact(target, stored) and proxy.received < SIZE  # resumed from the partial copy


def test_an_object_whose_etag_contradicts_the_registry_stops_with_one_line_before_any_download(
    proxy, stored, tmp_path
):
    wrong = {**stored, "hash": "AAAAAAAAAAAAAAAAAAAAAA"}  # an md5: the single-part ETag must equal it
    with pytest.raises(
        FetchError, match=r"^artifact abc \(cellxgene/dataset.h5ad\): .* changed since it was registered"
    ):
        fetch(proxy, wrong, tmp_path / "cache" / "dataset.h5ad")
    assert proxy.received < 2**16
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]


def test_wrong_credentials_give_one_line_naming_the_storage(server, stored, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")  # the key is right, the secret is not
    fs = filesystem(f"s3://{BUCKET}?endpoint_url={server.endpoint}")
    with pytest.raises(FetchError, match=rf"{BUCKET}/data/dataset.h5ad refused access"):
        cached_copy(stored, tmp_path / "dataset.h5ad", fs, f"{BUCKET}/data/dataset.h5ad")
