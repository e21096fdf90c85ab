"""Connecting to a LaminDB instance: one kept in a folder of its own (the demo, the embedded target), or a
user's own by its slug.

lamindb keeps its connection in process-global state read from the environment at import (`LAMIN_*`); this
module alone sets it: every step, tool and demo build connects through here. A process connects to one
instance: `resolve` to the source, `register` and the report to the target (`cellquery.source`,
`cellquery.target`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cellquery.errors import SourceError

log = logging.getLogger(__name__)

LOCAL_OWNER = "anonymous"  # the owner lamindb gives an instance made without a login
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 32)  # seconds, about a minute in all: a restarting server is back by then
T = TypeVar("T")


@dataclass(frozen=True)
class LocalInstance:
    """A LaminDB instance kept in a folder of its own: settings, cache and (unless `storage` names another
    location) storage under `root`; SQLite inside the storage unless `db_url` names a PostgreSQL database."""

    root: Path
    name: str
    db_url: str | None = None
    storage: str | None = None  # default: `<root>/storage`

    @property
    def slug(self) -> str:
        return f"{LOCAL_OWNER}/{self.name}"

    @property
    def storage_root(self) -> str:
        return self.storage or str(self.root / "storage")

    @property
    def sqlite_path(self) -> Path:
        return Path(self.storage_root) / ".lamindb" / "lamin.db"

    @property
    def exists(self) -> bool:
        return (self.root / "settings").is_dir() and (self.db_url is not None or self.sqlite_path.exists())

    def settings_env(self) -> dict[str, str]:
        """lamindb_setup's settings and cache in the folder, never `~/.lamin`."""
        return {
            "LAMIN_SETTINGS_DIR": str(self.root / "settings"),
            "LAMIN_CACHE_DIR": str(self.root / "cache"),
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point lamindb at this instance."""
        env = {**self.settings_env(), "LAMIN_CURRENT_INSTANCE": self.slug}
        if self.db_url is None:
            # Several Snakemake jobs write one SQLite file: wait for the lock instead of failing.
            env["LAMINDB_DJANGO_DATABASE_URL"] = (
                f"sqlite:///{self.sqlite_path}?timeout=60&transaction_mode=IMMEDIATE"
            )
        return env

    def create(self, modules: str | None = "bionty"):
        """Create the instance (a half-made one is made again); returns `lamindb`, connected to it."""
        import contextlib
        import shutil

        for leftover in ("settings", "cache", ".lamin"):
            shutil.rmtree(self.root / leftover, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        use_settings(self.settings_env())
        import lamindb_setup

        # init writes a `.lamin/current_instance` marker into the working directory: keep it in the folder
        with contextlib.chdir(self.root):
            lamindb_setup.init(storage=self.storage_root, name=self.name, modules=modules, db=self.db_url)
        return connect(self.env())


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


LAMIN_VARIABLES = (
    "LAMIN_SETTINGS_DIR",
    "LAMIN_CACHE_DIR",
    "LAMIN_CURRENT_INSTANCE",
    "LAMINDB_DJANGO_DATABASE_URL",
)


def use_settings(env: dict[str, str]) -> None:
    """lamindb's settings from `env` alone (before lamindb is imported): none inherited from the process that
    started this one (Snakemake's, pointed at the source it checked), `{}` for the user's own (`~/.lamin`)."""
    for name in LAMIN_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(env)


def connect(env: dict[str, str], *, read_only: bool = False):
    """Point this process at an instance (before lamindb is imported) and return `lamindb`; `read_only`:
    every database connection refuses writes (a source is only read)."""
    if read_only:
        refuse_writes()
    use_settings(env)
    ln = quiet_import()
    mark_offline(ln)
    return ln


def refuse_writes() -> None:
    """Every database connection this process opens from now on is read-only: a write fails loudly."""
    from django.db.backends.signals import connection_created

    connection_created.connect(_read_only, dispatch_uid="cellquery-read-only")


def _read_only(sender, connection, **kwargs) -> None:
    statement = {
        "sqlite": "PRAGMA query_only = ON",
        "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    }[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(statement)


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
