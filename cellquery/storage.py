"""Reaching a storage location: s3fs filesystems and TileDB contexts built from a LaminDB storage root.

A root names its endpoint the way lamindb stores it (`s3://bucket/prefix?endpoint_url=http://host:port`);
TileDB ignores `AWS_ENDPOINT_URL_S3`, so every client gets the endpoint, region and credentials explicitly.
Settings a cluster needs (proxy, timeouts, region, anonymous access) come from the `object_storage` config
key: `s3` holds s3fs/botocore options, `tiledb` TileDB config entries.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

# What every job that reads the data uses (the config's keys of the same names; see rules/common.smk).
STORAGE_DEFAULTS = {"cache_dir": "", "object_storage": {}, "fetch": "auto", "cache_headroom_gb": 1}
CHUNK = 8 * 2**20  # bytes per read of a download; the block size of an s3fs file
# botocore's own timeouts and retries: a stalled read fails after read_timeout and is resumed by the caller.
CLIENT_CONFIG = {"connect_timeout": 10, "read_timeout": 20, "retries": {"max_attempts": 2}}


def is_remote(path: str) -> bool:
    return "://" in str(path)


def split_root(root: str) -> tuple[str, str | None]:
    """`s3://bucket/prefix?endpoint_url=http://...` -> (`s3://bucket/prefix`, endpoint url or None)."""
    parts = urlsplit(root)
    endpoint = parse_qs(parts.query).get("endpoint_url", [None])[0]
    return parts._replace(query="").geturl(), endpoint


def filesystem(root: str, settings: dict | None = None):
    """An s3fs filesystem for a storage root: its endpoint, the environment's credentials (or anonymous
    access with `anon: true`), timeouts that turn a stall into a retry."""
    import s3fs

    _, endpoint = split_root(root)
    options = dict((settings or {}).get("s3", {}))
    config = {**CLIENT_CONFIG, **options.pop("config_kwargs", {})}
    return s3fs.S3FileSystem(
        endpoint_url=endpoint,
        config_kwargs=config,
        default_block_size=CHUNK,
        skip_instance_cache=True,
        **options,
    )


def tiledb_config(root: str, settings: dict | None = None) -> dict[str, str]:
    """TileDB's S3 settings for a storage root: endpoint, region, the environment's credentials or unsigned
    requests (a public bucket such as the Census'), then the config's own `tiledb` entries."""
    _, endpoint = split_root(root)
    config = {"vfs.s3.region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if endpoint:
        parts = urlsplit(endpoint)
        config |= {
            "vfs.s3.endpoint_override": parts.netloc,
            "vfs.s3.scheme": parts.scheme,
            "vfs.s3.use_virtual_addressing": "false",
        }
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        config |= {
            "vfs.s3.aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "vfs.s3.aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "vfs.s3.no_sign_request": "false",
        }
    else:
        config["vfs.s3.no_sign_request"] = "true"
    return config | {k: str(v) for k, v in (settings or {}).get("tiledb", {}).items()}


def soma_context(root: str | None, settings: dict | None = None):
    """A SOMA context for a store under `root` (None for a local store: the default context)."""
    if not root or not is_remote(root):
        return None
    import tiledbsoma as soma

    return soma.SOMATileDBContext(tiledb_config=tiledb_config(root, settings))
