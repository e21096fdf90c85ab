"""Reaching a storage location: one decision of how a storage root is reached (`access`), handed to s3fs
filesystems and TileDB contexts alike.

A root names its endpoint the way lamindb stores it (`s3://bucket/prefix?endpoint_url=http://host:port`);
TileDB ignores `AWS_ENDPOINT_URL_S3`, AWS profiles and the storage's region, so every client gets the
endpoint, region and credentials explicitly. Credentials are found as botocore finds them (environment,
`AWS_PROFILE`, the shared credentials and config files); with none, or for a bucket lamindb-setup knows as
public, requests go unsigned, as lamindb-setup reads them. The `object_storage` config key overrides: `s3`
holds s3fs/botocore options (`anon`, `profile`, `key`/`secret`/`token`, ...), `tiledb` TileDB config entries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qs, urlsplit

from cellquery.errors import SourceError

# What every job that reads the data uses (the config's keys of the same names; see rules/common.smk).
DOWNLOAD_PATIENCE_S = 120  # seconds a download or stream waits, in all, for a store that fails every read
STORAGE_DEFAULTS = {
    "cache_dir": "",
    "object_storage": {},
    "fetch": "auto",
    "cache_headroom_gb": 1,
    "download_patience_s": DOWNLOAD_PATIENCE_S,
}
CHUNK = 8 * 2**20  # bytes per read of a download; the block size of an s3fs file
# botocore's own timeouts and retries: a stalled read fails after read_timeout and is resumed by the caller.
CLIENT_CONFIG = {"connect_timeout": 10, "read_timeout": 20, "retries": {"max_attempts": 2}}
AWS_DEFAULT = "us-east-1"  # the region AWS clients assume when none is known
# The buckets lamindb-setup reads anonymously (`lamindb_setup.core._aws_options.PUBLIC_BUCKETS`; importing it
# would import lamindb_setup, which reads its settings directory once, before the demo has pointed it).
PUBLIC_BUCKETS = ("cellxgene-data-public", "bionty-assets")
# S3 error codes of an authorization failure: no retry mends them.
REFUSED_CODES = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "AccountProblem",
)


def patience_of(storage: dict) -> float:
    """A run's `download_patience_s` (queries resolved before the setting existed wait the default)."""
    return storage.get("download_patience_s", DOWNLOAD_PATIENCE_S)


def is_remote(path: str) -> bool:
    return "://" in str(path)


def split_root(root: str) -> tuple[str, str | None]:
    """`s3://bucket/prefix?endpoint_url=http://...` -> (`s3://bucket/prefix`, endpoint url or None)."""
    parts = urlsplit(root)
    endpoint = parse_qs(parts.query).get("endpoint_url", [None])[0]
    return parts._replace(query="").geturl(), endpoint


@dataclass(frozen=True)
class Access:
    """How one storage root is reached: endpoint, region, and unsigned requests or whose credentials."""

    endpoint: str | None  # a custom endpoint (the root's `endpoint_url`); None: AWS
    region: str  # "": none known at a custom endpoint (lamindb then leaves it to the client)
    # "anonymous" (unsigned), "config" (object_storage.s3 key/secret), "profile" (object_storage.s3.profile)
    # or "environment" (botocore's chain: variables, AWS_PROFILE, ~/.aws files)
    source: str
    key: str | None = None  # the credentials found, frozen (TileDB cannot refresh them)
    secret: str | None = None
    token: str | None = None  # a session token of temporary credentials
    profile: str | None = None
    s3: Mapping = field(default_factory=dict)  # the config's further s3fs options
    tiledb: Mapping = field(default_factory=dict)  # the config's raw TileDB entries

    @property
    def anon(self) -> bool:
        return self.source == "anonymous"

    def s3fs_options(self) -> dict:
        """Options of an `s3fs.S3FileSystem`: the same endpoint, region and signing as TileDB gets (from the
        environment, s3fs's own chain finds the same credentials and refreshes them)."""
        options = dict(self.s3)
        config = {**CLIENT_CONFIG, **options.pop("config_kwargs", {})}
        client = {**({"region_name": self.region} if self.region else {}), **options.pop("client_kwargs", {})}
        signing = {
            "anonymous": {"anon": True},
            "config": {"key": self.key, "secret": self.secret, "token": self.token},
            "profile": {"profile": self.profile},
        }.get(self.source, {})
        return {
            "endpoint_url": self.endpoint,
            "config_kwargs": config,
            "client_kwargs": client,
            **signing,
            **options,
        }

    def tiledb_config(self) -> dict[str, str]:
        """TileDB's S3 entries, as lamindb's `SOMAS3ContextFactory` builds them, then the config's own."""
        config = {"vfs.s3.region": self.region}
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            config |= {
                "vfs.s3.endpoint_override": parts.netloc,
                "vfs.s3.scheme": parts.scheme,
                "vfs.s3.use_virtual_addressing": "false",
            }
        config |= {
            "vfs.s3.no_sign_request": "true" if self.anon else "false",
            "vfs.s3.aws_access_key_id": self.key or "",
            "vfs.s3.aws_secret_access_key": self.secret or "",
            "vfs.s3.aws_session_token": self.token or "",
        }
        return config | {k: str(v) for k, v in self.tiledb.items()}


def refused_hint(anon: bool) -> str:
    """What to check when the storage refuses access to a client reading anonymously or signing."""
    if anon:
        return (
            "it was read anonymously (no AWS credentials found, or object_storage.s3.anon): a bucket that is "
            "not public needs credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    return (
        "check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, "
        "~/.aws, object_storage.s3) and that they may read it"
    )


def access(root: str, settings: dict | None = None, region: str | None = None) -> Access:
    """How `root` is reached: its endpoint; `region` (the storage record's, lamindb's `Storage.region`), else
    the environment's; the config's `object_storage` overrides; credentials as botocore finds them, or
    unsigned requests when it finds none or the bucket is one lamindb-setup reads as public."""
    base, endpoint = split_root(root)
    options = dict((settings or {}).get("s3", {}))
    anon, profile = options.pop("anon", None), options.pop("profile", None)
    given = {name: options.pop(name) for name in ("key", "secret", "token") if name in options}
    if anon is None and endpoint is None and urlsplit(base).netloc in PUBLIC_BUCKETS:
        anon = True
    session = _botocore_session(profile)
    found = None if anon else given or _credentials(session)
    if anon or not found:
        source, found = "anonymous", {}
    else:
        source = "config" if given else "profile" if profile else "environment"
    return Access(
        endpoint=endpoint,
        region=region or _config(session, "region") or ("" if endpoint else AWS_DEFAULT),
        source=source,
        profile=profile,
        s3=MappingProxyType(options),
        tiledb=MappingProxyType(dict((settings or {}).get("tiledb", {}))),
        **found,
    )


def _botocore_session(profile: str | None):
    import botocore.session

    return botocore.session.Session(profile=profile)


def _config(session, name: str) -> str | None:
    """A setting of the AWS config (`region`, `profile`): environment, then the profile's files."""
    from botocore.exceptions import ProfileNotFound

    try:
        return session.get_config_variable(name)
    except ProfileNotFound as error:
        raise SourceError(
            f"object storage: {error}; check AWS_PROFILE and object_storage.s3.profile"
        ) from None


def _credentials(session) -> dict[str, str] | None:
    """The credentials botocore's chain finds (frozen: TileDB cannot refresh them), or None."""
    from botocore.exceptions import BotoCoreError

    _config(session, "region")  # a missing profile: one line
    try:
        found = session.get_credentials()
    except BotoCoreError as error:  # an expired SSO login, a failing credential_process, ...
        raise SourceError(f"object storage: AWS credentials cannot be loaded ({error})") from None
    if found is None or found.access_key is None:
        return None
    frozen = found.get_frozen_credentials()
    return {"key": frozen.access_key, "secret": frozen.secret_key, "token": frozen.token}


def filesystem(root: str, settings: dict | None = None, *, region: str | None = None):
    """An s3fs filesystem for a storage root (`access`), with timeouts that turn a stall into a retry."""
    import s3fs

    options = access(root, settings, region).s3fs_options()
    return s3fs.S3FileSystem(default_block_size=CHUNK, skip_instance_cache=True, **options)


def tiledb_config(root: str, settings: dict | None = None, *, region: str | None = None) -> dict[str, str]:
    """TileDB's S3 settings for a storage root (`access`)."""
    return access(root, settings, region).tiledb_config()


def soma_context(root: str | None, settings: dict | None = None, *, region: str | None = None):
    """A SOMA context for a store under `root` (None for a local store: the default context)."""
    if not root or not is_remote(root):
        return None
    import tiledbsoma as soma

    return soma.SOMATileDBContext(tiledb_config=tiledb_config(root, settings, region=region))


def refusal(error: BaseException) -> str | None:
    """Why the storage refused access, in a few words, when `error` is an authorization failure (s3fs's
    PermissionError, botocore's missing credentials, TileDB's 403); None for any other error."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, PermissionError) and error.errno is None:  # s3fs's, not a local file's
        return f"PermissionError: {str(error).strip() or 'access denied'}"
    text = str(error)
    code = re.search(r"\[Exception: (\w+)\]", text)
    if "[HTTP Response Code: 403]" in text or (code and code[1] in REFUSED_CODES):
        message = text.strip().splitlines()[0].rpartition("] : ")[2]
        return f"{code[1] if code else '403'}: {message}"
    return None


def region_of(record) -> str | None:
    """The storage region a manifest row (`storage_region`) or a census location (`region`) carries."""
    value = record.get("storage_region", record.get("region"))
    return value if isinstance(value, str) and value else None
