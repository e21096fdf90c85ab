"""Integrity as the registry records it, against a real LaminDB instance whose storage is a bucket of a real
S3 server on loopback (SeaweedFS): h5ads registered in place (hash from the ETag, `md5` or `md5-<parts>`),
one uploaded by lamindb (its own `md5`), one in local storage; fetched through a counting proxy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
from boto3.s3.transfer import TransferConfig
from conftest import clean_env

from bench.proxy import CountingProxy
from cellquery.errors import FetchError, SourceError
from cellquery.query import artifacts
from cellquery.query.runfiles import read_manifest
from cellquery.storage.integrity import Digest, MiB, etag_hash, mismatch, part_sizes, sidecar
from cellquery.storage.objectstore import ACCESS_KEY, REGION, SECRET_KEY, ObjectServer

SIZE = 20_000_000  # 3 parts of 8 MiB, as aws-cli uploads it
BUCKET = "cellquery-integrity-test"
SINGLE = TransferConfig(multipart_threshold=64 * MiB)
MULTIPART = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
IN_PLACE = {"single.h5ad": SINGLE, "multipart.h5ad": MULTIPART, "flip-single.h5ad": SINGLE}
IN_PLACE |= {"flip-multipart.h5ad": MULTIPART}

# Run in a process of its own (one instance per process): a new instance under argv[1] with the bucket as a
# second storage location; the objects under it registered in place, a file uploaded by lamindb, a file in
# local storage registered in place; prints the manifest and lamindb's own hashes of two local files.
REGISTER = """
import contextlib, json, sys
from pathlib import Path

from cellquery.instances.demo_instance import DemoInstance, use_demo_settings
from cellquery.instances.lamin import connect

demo = DemoInstance(Path(sys.argv[1]), "small")
use_demo_settings(demo, fresh=True)
demo.root.mkdir(parents=True)
import lamindb_setup
from lamindb_setup.core.hashing import hash_file

with contextlib.chdir(demo.root):
    lamindb_setup.init(storage=str(demo.storage), name=demo.name)
ln = connect(demo.env())
from cellquery.query.artifacts import manifest
from cellquery.storage.integrity import file_hashes

endpoint, bucket, keys, sources = sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
local = demo.storage / "local.h5ad"
local.write_bytes(Path(sources["local"]).read_bytes())
ln.Artifact(str(local), description="local").save()
root = f"s3://{bucket}/data?endpoint_url={endpoint}"
ln.Storage(root=root).save()
for key in keys:
    ln.Artifact(f"s3://{bucket}/data/{key}?endpoint_url={endpoint}", description=key).save()
ln.settings.storage = root
ln.Artifact(sources["uploaded"], key="uploaded.h5ad").save()
lamindb = {}
for name in ("local", "large"):
    _, hash, hash_type = hash_file(Path(sources[name]))
    entry = {"hash": hash, "hash_type": hash_type, "size": Path(sources[name]).stat().st_size}
    lamindb[name] = [hash, hash_type, file_hashes(Path(sources[name]), entry)]
table = manifest(ln.Artifact.filter(suffix=".h5ad"))
print(json.dumps({"manifest": table.to_csv(sep="\\t", index=False), "lamindb": lamindb}))
"""


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


def content(name: str, size: int = SIZE) -> bytes:
    return np.random.default_rng(list(name.encode())).bytes(size)


def upload(server, key: str, data: bytes, config: TransferConfig) -> None:
    """Put `data` at object `key` of the bucket (a path under `data/`, the storage location)."""
    client(server.endpoint).upload_fileobj(io.BytesIO(data), BUCKET, key, Config=config)


@pytest.fixture(scope="module")
def server(object_server_root, monkeypatch_module):
    server = ObjectServer.at(object_server_root).ensure_running()
    for name, value in server.uploader_env().items():
        monkeypatch_module.setenv(name, value)
    return server


@pytest.fixture(scope="module")
def registry(server, tmp_path_factory):
    """The instance's manifest (one row per artifact, by key) and lamindb's hashes of two local files."""
    folder = tmp_path_factory.mktemp("integrity")
    s3 = client(server.endpoint)
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    for key, config in IN_PLACE.items():
        upload(server, f"data/{key}", content(key), config)
    sources = {
        "uploaded": folder / "uploaded.h5ad",
        "local": folder / "local.h5ad",
        "large": folder / "large",
    }
    for name, path in sources.items():
        path.write_bytes(content(name, 60 * MiB if name == "large" else SIZE))
    arguments = [folder / "instance", server.endpoint, BUCKET, json.dumps(list(IN_PLACE))]
    arguments.append(json.dumps({k: str(v) for k, v in sources.items()}))
    run = subprocess.run(
        [sys.executable, "-c", REGISTER, *map(str, arguments)],
        capture_output=True,
        text=True,
        env=clean_env(**server.uploader_env()),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    table = read_manifest(io.StringIO(printed["manifest"]))
    return table.set_index("key", drop=False), printed["lamindb"]


@pytest.fixture
def proxy(server):
    counting = CountingProxy(server.port)
    yield counting
    counting.close()


def through(proxy, entry):
    """A manifest row whose storage is reached through the proxy."""
    return {**entry, "storage_root": f"s3://{BUCKET}/data?endpoint_url={proxy.endpoint}"}


def storage(tmp_path) -> dict:
    return {"cache_dir": str(tmp_path / "cache"), "object_storage": {}}


def left_in(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.mark.parametrize("name,hash_type", [("single.h5ad", "md5"), ("multipart.h5ad", "md5-3")])
def test_an_in_place_object_is_downloaded_once_and_accepted(registry, proxy, tmp_path, name, hash_type):
    entry = through(proxy, registry[0].loc[name])
    assert entry["hash_type"] == hash_type
    path = artifacts.fetch(entry, storage(tmp_path))
    assert path.read_bytes() == content(name)
    assert SIZE <= proxy.received < SIZE * 1.02  # one download, then accepted
    print(f"\n{name} ({hash_type}): {proxy.received:,} bytes moved for {SIZE:,}")
    proxy.reset()
    assert artifacts.fetch(entry, storage(tmp_path)) == path and proxy.received == 0
    assert left_in(tmp_path / "cache") == [name, f"{name}.verified"]


def test_a_verified_copy_is_not_hashed_again_and_a_changed_one_is(registry, proxy, tmp_path):
    entry = through(proxy, registry[0].loc["single.h5ad"])
    path = artifacts.fetch(entry, storage(tmp_path))
    recorded = sidecar(path).read_text()
    proxy.reset()
    artifacts.fetch(entry, storage(tmp_path))
    assert sidecar(path).read_text() == recorded and proxy.received == 0  # the record, no hash, no request
    stat = path.stat()
    with open(path, "r+b") as damaged:  # a byte flipped in place, the modification time put back
        damaged.write(bytes([path.read_bytes()[0] ^ 1]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    artifacts.fetch(entry, storage(tmp_path))
    assert path.read_bytes() == content("single.h5ad") and SIZE <= proxy.received < SIZE * 1.02


@pytest.mark.parametrize("name,config", [("flip-single.h5ad", SINGLE), ("flip-multipart.h5ad", MULTIPART)])
def test_an_object_changed_since_its_registration_is_refused_in_one_line_before_any_download(
    registry, server, proxy, tmp_path, name, config
):
    entry = through(proxy, registry[0].loc[name])
    data = bytearray(content(name))
    data[SIZE // 2] ^= 1
    upload(server, f"data/{name}", bytes(data), config)
    with pytest.raises(FetchError) as refused:
        artifacts.fetch(entry, storage(tmp_path))
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"artifact {entry['uid']} ({entry['key']}): ")
    assert f"{BUCKET}/data/{name} changed since it was registered" in line and entry["hash"] in line
    assert proxy.received < 2**16 and left_in(tmp_path) == []


def test_a_copy_that_does_not_match_is_refused_in_one_line_after_one_download(
    registry, server, proxy, tmp_path
):
    """lamindb hashed the file it uploaded (`md5`); the object, uploaded again multipart with a byte flipped,
    has an ETag that tells nothing: the copy is hashed as it is written and refused, nothing kept."""
    entry = through(proxy, registry[0].loc["uploaded.h5ad"])
    assert entry["hash_type"] == "md5"
    data = bytearray(content("uploaded"))
    data[7] ^= 1
    upload(server, entry["path"].split(f"{BUCKET}/", 1)[1], bytes(data), MULTIPART)
    with pytest.raises(FetchError) as refused:
        artifacts.fetch(entry, storage(tmp_path))
    line = str(refused.value)
    found = Digest("md5", SIZE)
    found.update(bytes(data))
    assert (
        "\n" not in line and f"the copy of {BUCKET}/data/" in line and "does not match the registry" in line
    )
    assert f"hash {found.hashes()['']}, the registry {entry['hash']} (md5)" in line
    assert SIZE <= proxy.received < SIZE * 1.02 and left_in(tmp_path) == []


def test_a_local_file_is_checked_against_the_hash_lamindb_wrote(registry, tmp_path):
    entry = registry[0].loc["local.h5ad"]
    path = Path(entry["path"])
    assert entry["hash_type"] == "md5" and artifacts.fetch(entry, storage(tmp_path)) == path
    assert artifacts.fetch(entry.drop("hash_type"), storage(tmp_path)) == path  # a manifest from before
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(
        SourceError, match=r"does not match its registry size and hash \(hash \S+, the registry"
    ):
        artifacts.fetch(entry, storage(tmp_path))
    path.unlink()  # a file the storage lost is missing, not a mismatch
    with pytest.raises(SourceError) as missing:
        artifacts.fetch(entry, storage(tmp_path))
    told = f"artifact {entry['uid']} ({entry['key']}): its stored file {path} is missing"
    assert str(missing.value) == f"{told} (the instance's storage lost it)"


def test_hashes_computed_here_equal_lamindb_s_and_the_server_s(registry, server):
    table, lamindb = registry
    for name in ("local", "large"):  # lamindb's hash_file: md5 (20 MB) and sha1-fl (60 MiB)
        hash, hash_type, here = lamindb[name]
        assert hash_type == ("md5" if name == "local" else "sha1-fl") and here == {"": hash}
    for name in ("single.h5ad", "multipart.h5ad"):  # lamindb's hash from the ETag; the server's ETag
        head = client(server.endpoint).head_object(Bucket=BUCKET, Key=f"data/{name}")
        entry = table.loc[name]
        computed, data = Digest(entry["hash_type"], SIZE), content(name)
        for start in range(0, SIZE, 3_000_001):  # pieces across part boundaries
            computed.update(data[start : start + 3_000_001])
        assert etag_hash(head["ETag"]) == (entry["hash"], entry["hash_type"])
        assert list(computed.hashes().values()) == [entry["hash"]]


def test_a_multipart_etag_is_the_md5_of_the_parts_md5s():
    data = content("parts")
    digests = b"".join(hashlib.md5(data[i : i + 8 * MiB]).digest() for i in range(0, SIZE, 8 * MiB))
    etag = f'"{hashlib.md5(digests).hexdigest()}-3"'
    assert part_sizes(SIZE, 3) == [8 * MiB] and part_sizes(SIZE, 3, reported=7 * MiB) == [7 * MiB, 8 * MiB]
    computed = Digest("md5-3", SIZE)
    computed.update(data)
    assert computed.hashes() == {"8 MiB parts": etag_hash(etag)[0]} and etag_hash(etag)[1] == "md5-3"


def test_a_hash_type_cellquery_cannot_compute_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"x")
    found = mismatch(path, {"hash_type": "md5-etag", "size": 1, "hash": "h"})
    assert found == "hash type md5-etag of registry hash h: cellquery cannot compute it"
