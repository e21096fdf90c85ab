"""Connecting to a LaminDB instance: the embedded demo (offline, inside the project) or a remote slug.

lamindb keeps its connection in process-global state read from the environment at import (`LAMIN_*`); this
module alone sets it: every step, tool and demo build connects through here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cellquery.errors import SourceError

if TYPE_CHECKING:
    from cellquery.spec import QuerySpec

DEMO_OWNER = "anonymous"
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 32)  # seconds, about a minute in all: a restarting server is back by then

log = logging.getLogger(__name__)
T = TypeVar("T")


STORAGE_KINDS = ("local", "s3")


@dataclass(frozen=True)
class DemoInstance:
    """Where one scale of the embedded demo lives: `<project>/.demo/<scale>/` (`<scale>-s3/` when its data
    live in a bucket of the demo's own object server)."""

    project: Path
    scale: str
    db_url: str | None = None  # a postgresql:// URL; SQLite inside the storage when None
    storage_kind: str = "local"  # "s3": h5ads and census stores in the object server's bucket

    @property
    def dirname(self) -> str:
        return self.scale if self.storage_kind == "local" else f"{self.scale}-{self.storage_kind}"

    @property
    def root(self) -> Path:
        return self.project.resolve() / ".demo" / self.dirname

    @property
    def name(self) -> str:
        return f"cellquery-demo-{self.dirname}"

    @property
    def object_server(self):
        """The demo's SeaweedFS server (data under `<root>/s3/`), for `storage_kind: s3`."""
        from cellquery.objectstore import ObjectServer

        return ObjectServer.at(self.root / "s3")

    @property
    def bucket(self) -> str:
        return f"cellquery-demo-{self.scale}"

    @property
    def data_root(self) -> str:
        """Where the demo's h5ads and census stores live: the local storage, or its bucket (with endpoint)."""
        if self.storage_kind == "local":
            return str(self.storage)
        return f"s3://{self.bucket}/data?endpoint_url={self.object_server.endpoint}"

    @property
    def slug(self) -> str:
        return f"{DEMO_OWNER}/{self.name}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def sqlite_path(self) -> Path:
        return self.storage / ".lamindb" / "lamin.db"

    def env(self) -> dict[str, str]:
        """Environment variables that point lamindb at this instance and keep it off `~/.lamin`."""
        env = {
            "LAMIN_SETTINGS_DIR": str(self.root / "settings"),
            "LAMIN_CACHE_DIR": str(self.root / "cache"),
            "LAMIN_CURRENT_INSTANCE": self.slug,
        }
        if self.storage_kind == "s3":
            env.update(self.object_server.env())
        if self.db_url is None:
            # Several Snakemake jobs write one SQLite file: wait for the lock instead of failing.
            env["LAMINDB_DJANGO_DATABASE_URL"] = (
                f"sqlite:///{self.sqlite_path}?timeout=60&transaction_mode=IMMEDIATE"
            )
        return env


def export_object_storage_env(demo: DemoInstance) -> None:
    """For an S3 demo, this process and every job it starts reach the demo's server as a user's shell
    reaches theirs: its endpoint and credentials in the environment."""
    if demo.storage_kind == "s3":
        os.environ.update(demo.object_server.env())


def quiet_import():
    """Import lamindb without its connect banner; returns the module."""
    from lamindb_setup.core._logger import logger

    logger.set_verbosity(0)
    import lamindb as ln

    ln.settings.verbosity = "error"
    return ln


def mark_offline(ln) -> None:
    """A local instance is never on the hub: skip the HTTP lookup that fails without a network."""
    instance = ln.setup.settings.instance
    if not instance.is_remote:
        instance._is_on_hub = False


def use_demo_settings(demo: DemoInstance, *, fresh: bool = False) -> None:
    """Point lamindb_setup at the demo's settings and cache (never `~/.lamin`) without connecting, as hashing
    files needs; `fresh`: no current instance either, for creating it."""
    env = demo.env()
    if fresh:
        os.environ.update({k: env[k] for k in ("LAMIN_SETTINGS_DIR", "LAMIN_CACHE_DIR")})
        _forget_current_instance()
    else:
        os.environ.update(env)


def _forget_current_instance() -> None:
    for key in ("LAMIN_CURRENT_INSTANCE", "LAMINDB_DJANGO_DATABASE_URL"):
        os.environ.pop(key, None)


def connect(env: dict[str, str]):
    """Point this process at an instance (before lamindb is imported) and return `lamindb`."""
    os.environ.update(env)
    ln = quiet_import()
    mark_offline(ln)
    return ln


def connect_source(spec: QuerySpec, demo: DemoInstance):
    """`lamindb` connected to the spec's instance: the embedded demo, or an `owner/name` slug."""
    if spec.instance == "demo":
        if not demo.sqlite_path.exists() and demo.db_url is None:
            raise SourceError(
                f"source.instance: the demo instance at {demo.root} is not built (run `make demo`)"
            )
        return connect(demo.env())
    _forget_current_instance()
    ln = quiet_import()
    try:
        ln.connect(spec.instance)
    except Exception as error:  # lamindb raises many kinds here: name what happened, in one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SourceError(
            f"source.instance: cannot connect to {spec.instance!r} ({reason}); "
            "without a network only the embedded demo (instance: demo) is reachable"
        ) from None
    mark_offline(ln)
    return ln


def retrying_lost_database(action: Callable[[], T], what: str) -> T:
    """`action()`, started again on a new connection when the PostgreSQL connection is lost (a restarted or
    briefly unreachable server); still lost after about a minute: one line. `action` must be safe to repeat.
    """
    from django.db import InterfaceError, OperationalError, connection

    delays = iter(RECONNECT_DELAYS)
    while True:
        try:
            return action()
        except (OperationalError, InterfaceError) as error:
            if connection.vendor != "postgresql":
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            _drop(connection)
            delay = next(delays, None)
            if delay is None:
                raise SourceError(
                    f"{what}: lost the connection to the registry database {_where(connection)} "
                    f"and could not reconnect for a minute ({reason}); run the workflow again"
                ) from None
            log.warning("%s: lost the database connection (%s); again in %d s", what, reason, delay)
            time.sleep(delay)


def _drop(connection) -> None:
    """Forget a broken connection: the next query opens a new one."""
    from django.db import DatabaseError

    try:
        connection.close()
    except DatabaseError:
        connection.connection = None


def _where(connection) -> str:
    settings = connection.settings_dict
    return f"{settings['NAME']} on {settings['HOST']}:{settings['PORT']}"
