"""How a storage root is reached (`cellquery.storage.settings.access`), rule by rule, against what lamindb
itself derives in the same environment: lamindb-setup's unsigned fallback (`AWSOptionsManager`), lamindb's
TileDB settings (`SOMAS3ContextFactory`) and the credentials its s3fs filesystems find. No `~/.aws` of the
machine is read: HOME is an empty directory of the test's own."""

from __future__ import annotations

import pytest

from cellquery.errors import SourceError
from cellquery.storage.settings import PUBLIC_BUCKETS, access

ENDPOINT = "http://127.0.0.1:9"  # nothing listens there: nothing here sends a request
CUSTOM = f"s3://some-bucket/data?endpoint_url={ENDPOINT}"
KEY, SECRET, TOKEN = "AKIATESTKEY", "test-secret", "test-session-token"


@pytest.fixture(autouse=True)
def no_aws_setup(tmp_path, monkeypatch):
    """A user without AWS set-up: no AWS or LAMIN_S3 variables, an empty home; no s3fs filesystem kept from
    another test's environment."""
    import os

    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()

    for name in list(os.environ):
        if name.startswith(("AWS_", "LAMIN_S3")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup either
    return tmp_path


def lamindb_tiledb_config(path: str, **storage_options) -> dict[str, str]:
    """The TileDB settings lamindb's `SOMAS3ContextFactory` builds for `path` with these s3fs options."""
    from lamindb.core.storage._tiledbsoma import SOMAS3ContextFactory
    from upath import UPath

    factory = SOMAS3ContextFactory(UPath(path, **storage_options))
    return {k: v for k, v in factory._context.tiledb_config.items() if k.startswith("vfs.s3.")}


def lamindb_reads_anonymously() -> bool:
    """lamindb-setup's decision for buckets it does not manage (its probe of AWS refused on loopback)."""
    from lamindb_setup.core._aws_options import AWSOptionsManager

    return AWSOptionsManager().anon


def test_without_credentials_requests_go_unsigned_as_lamindb_setup_reads(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")  # its probe fails at once
    reach = access(CUSTOM)
    assert reach.anon and lamindb_reads_anonymously()
    assert reach.tiledb_config()["vfs.s3.no_sign_request"] == "true"
    assert reach.s3fs_options()["anon"] is True


def test_credentials_of_the_environment_sign_as_lamindb_setup_signs(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    reach = access(CUSTOM)
    assert not reach.anon and not lamindb_reads_anonymously()
    signing = reach.tiledb_config()["vfs.s3.no_sign_request"]
    assert (reach.key, reach.secret, signing) == (KEY, SECRET, "false")


def test_a_custom_endpoint_gets_the_tiledb_settings_lamindb_gives_it():
    assert access(CUSTOM).tiledb_config() == lamindb_tiledb_config(
        "s3://some-bucket/data", endpoint_url=ENDPOINT, anon=True
    )


def test_the_region_is_the_storage_records_as_lamindb_derives_it(monkeypatch):
    """lamindb knows its hosted buckets' regions offline; any other comes from the `Storage` record."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the environment's default must not win
    from lamindb_setup.core.upath import get_storage_region

    root = "s3://lamin-us-west-2/some/prefix"
    reach = access(root, region=get_storage_region(root))
    assert reach.tiledb_config() == lamindb_tiledb_config(root, anon=True)
    assert reach.tiledb_config()["vfs.s3.region"] == "us-west-2"
    assert reach.s3fs_options()["client_kwargs"] == {"region_name": "us-west-2"}


def test_without_a_known_region_aws_is_asked_in_the_environments_region_or_us_east_1(monkeypatch):
    assert access("s3://some-bucket/data").region == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert access("s3://some-bucket/data").region == "eu-central-1"


def test_the_public_cellxgene_bucket_is_read_unsigned_even_with_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    from lamindb_setup.core import _aws_options

    assert "cellxgene-data-public" in PUBLIC_BUCKETS and PUBLIC_BUCKETS == _aws_options.PUBLIC_BUCKETS
    reach = access("s3://cellxgene-data-public/cell-census/2025-11-08/soma", region="us-west-2")
    assert reach.anon and reach.tiledb_config()["vfs.s3.region"] == "us-west-2"
    assert not access("s3://cellxgene-data-public", {"s3": {"anon": False}}).anon  # the config decides


def test_a_session_token_reaches_tiledb_as_lamindb_hands_it(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    ours = access(CUSTOM).tiledb_config()
    lamindb = lamindb_tiledb_config(
        "s3://some-bucket/data", endpoint_url=ENDPOINT, key=KEY, secret=SECRET, token=TOKEN
    )
    assert ours["vfs.s3.aws_session_token"] == TOKEN
    assert {k: ours[k] for k in lamindb} == lamindb


def write_profile(home, name: str, region: str) -> None:
    aws = home / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        f"[{name}]\naws_access_key_id = {KEY}\n"
        f"aws_secret_access_key = {SECRET}\naws_session_token = {TOKEN}\n"
    )
    (aws / "config").write_text(f"[profile {name}]\nregion = {region}\n")


def lamindb_profile_credentials(**storage_options) -> tuple:
    """The credentials the s3fs filesystem of a lamindb path finds with these options."""
    from fsspec.asyn import sync
    from upath import UPath

    fs = UPath("s3://some-bucket/data", endpoint_url=ENDPOINT, **storage_options).fs
    fs.connect()
    frozen = sync(fs.loop, fs.session._credentials.get_frozen_credentials)
    return frozen.access_key, frozen.secret_key, frozen.token


def test_a_profile_named_by_aws_profile_reaches_tiledb(no_aws_setup, monkeypatch):
    write_profile(no_aws_setup, "reader", "eu-west-1")
    monkeypatch.setenv("AWS_PROFILE", "reader")
    reach = access(CUSTOM)
    config = reach.tiledb_config()
    found = (config["vfs.s3.aws_access_key_id"], config["vfs.s3.aws_secret_access_key"])
    assert (*found, config["vfs.s3.aws_session_token"]) == lamindb_profile_credentials()
    assert reach.region == "eu-west-1"  # the profile's, when the record has none
    assert access(CUSTOM, region="us-west-2").region == "us-west-2"


def test_a_profile_named_in_the_config_reaches_s3fs_and_tiledb(no_aws_setup):
    write_profile(no_aws_setup, "reader", "eu-west-1")
    reach = access(CUSTOM, {"s3": {"profile": "reader"}})
    assert reach.s3fs_options()["profile"] == "reader"
    assert (reach.key, reach.secret, reach.token) == lamindb_profile_credentials(profile="reader")


def test_a_missing_profile_is_one_line(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "nowhere")
    with pytest.raises(SourceError, match="nowhere"):
        access(CUSTOM)


def test_the_configs_overrides_win():
    tiledb = {"vfs.s3.region": "moon-1", "sm.io_concurrency": 2}
    reach = access(CUSTOM, {"s3": {"anon": True}, "tiledb": tiledb})
    config = reach.tiledb_config()
    assert reach.anon and config["vfs.s3.region"] == "moon-1" and config["sm.io_concurrency"] == "2"
    given = access(CUSTOM, {"s3": {"key": KEY, "secret": SECRET}})
    assert (given.s3fs_options()["key"], given.tiledb_config()["vfs.s3.aws_access_key_id"]) == (KEY, KEY)
