"""Reading object storage as a user without AWS set-up reads the public CELLxGENE bucket: a real S3 server on
loopback (SeaweedFS) with one public-read bucket and one private bucket. With no AWS variables and an empty
home, a download, a stream and a census store succeed unsigned on the public bucket; refused access (the
private bucket read anonymously, or wrong credentials) is one line naming the object, at once."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from conftest import object_server_missing, require_service

from cellquery.errors import FetchError, SourceError
from cellquery.query.census_route import open_store
from cellquery.storage.fetch import cached_copy
from cellquery.storage.objectstore import ACCESS_KEY, SECRET_KEY, ObjectServer
from cellquery.storage.settings import filesystem, soma_context
from cellquery.storage.streaming import streamed

PUBLIC, PRIVATE = "cellquery-public", "cellquery-private"
OBJECT, STORE = "data/dataset.h5ad", "data/soma"
WRITER = {"s3": {"key": ACCESS_KEY, "secret": SECRET_KEY}}  # the uploader's credentials, from the config
PROMPTLY = 10  # seconds: a refusal is not retried


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of this module's own (its public buckets are fixed when it starts)."""
    require_service(object_server_missing())
    root = tmp_path_factory.mktemp("public-server")
    server = ObjectServer.at(root, public=(PUBLIC,)).ensure_running()
    yield server
    server.stop()


def root(server, bucket: str) -> str:
    return f"s3://{bucket}?endpoint_url={server.endpoint}"


@pytest.fixture(scope="module")
def entries(server, tmp_path_factory) -> dict[str, dict]:
    """The same file and a SOMA collection in both buckets, written with the demo's credentials; per
    bucket, the file's manifest row."""
    import tiledbsoma as soma
    from lamindb_setup.core.hashing import hash_file

    local = tmp_path_factory.mktemp("source") / "dataset.h5ad"
    local.write_bytes(np.random.default_rng(0).bytes(3 * 2**20))
    rows = {}
    for bucket in (PUBLIC, PRIVATE):
        fs = filesystem(root(server, bucket), WRITER)
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.put_file(str(local), f"{bucket}/{OBJECT}")
        context = soma_context(root(server, bucket), WRITER)
        soma.Collection.create(f"s3://{bucket}/{STORE}", context=context).close()
        size, digest = local.stat().st_size, hash_file(local)[1]
        rows[bucket] = {"uid": "abc", "key": OBJECT, "size": size, "hash": digest}
    return rows


@pytest.fixture
def no_aws_setup(tmp_path, monkeypatch):
    """The client's environment: no AWS variables, an empty home (no ~/.aws)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "LAMIN_S3")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def wrong_credentials(no_aws_setup, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")  # the key is right, the secret is not


def download(server, bucket: str, entries, tmp_path):
    fs = filesystem(root(server, bucket))
    return cached_copy(entries[bucket], tmp_path / "cache" / bucket / OBJECT, fs, f"{bucket}/{OBJECT}")


def stream(server, bucket: str) -> bytes:
    fs = filesystem(root(server, bucket))
    data, _ = streamed(lambda handle: handle.read(1000), fs, f"{bucket}/{OBJECT}", f"artifact abc ({OBJECT})")
    return data


def census(server, bucket: str) -> list[str]:
    with open_store({"path": f"s3://{bucket}/{STORE}", "root": root(server, bucket)}) as store:
        return list(store.keys())


def test_the_public_bucket_is_read_without_credentials(server, entries, no_aws_setup, tmp_path):
    copy = download(server, PUBLIC, entries, tmp_path)
    assert copy.stat().st_size == entries[PUBLIC]["size"]
    assert stream(server, PUBLIC) == copy.read_bytes()[:1000]
    assert census(server, PUBLIC) == []


def test_writes_to_the_public_bucket_still_need_the_credentials(server, entries, no_aws_setup):
    with pytest.raises(PermissionError):
        filesystem(root(server, PUBLIC)).pipe(f"{PUBLIC}/data/other", b"no")


def refused_at_once(action, error: type, *words: str) -> str:
    started = time.monotonic()
    with pytest.raises(error) as raised:
        action()
    message = str(raised.value)
    assert time.monotonic() - started < PROMPTLY
    assert "\n" not in message and all(word in message for word in words), message
    return message


@pytest.mark.parametrize("client", ["no_aws_setup", "wrong_credentials"])
def test_the_private_bucket_refuses_in_one_line_at_once(server, entries, client, request, tmp_path):
    request.getfixturevalue(client)
    hint = "needs credentials" if client == "no_aws_setup" else "check the AWS credentials"
    refused_at_once(
        lambda: download(server, PRIVATE, entries, tmp_path),
        FetchError,
        f"{PRIVATE}/{OBJECT} refused access",
        hint,
    )
    refused_at_once(lambda: stream(server, PRIVATE), FetchError, f"{PRIVATE}/{OBJECT} refused access", hint)
    refused_at_once(
        lambda: census(server, PRIVATE), SourceError, f"census store s3://{PRIVATE}/{STORE}", "refused", hint
    )


def test_wrong_credentials_are_refused_on_the_public_bucket_too(server, entries, wrong_credentials, tmp_path):
    """As S3 does: a signed request with a bad signature is refused, whatever the bucket's policy."""
    refused_at_once(lambda: download(server, PUBLIC, entries, tmp_path), FetchError, "refused access")
