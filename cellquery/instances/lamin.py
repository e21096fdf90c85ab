"""Connecting to a LaminDB instance: one kept in a folder of its own (the demo, the embedded target), or a
user's own by its slug.

lamindb keeps its connection in process-global state read from the environment at import (`LAMIN_*`); this
module alone sets it: every step, tool and demo build connects through here. A process connects to one
instance: `resolve` to the source, `register` and the report to the target (`cellquery.instances.source`,
`cellquery.instances.target`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cellquery.errors import SourceError
from cellquery.files.locks import lock_holders

log = logging.getLogger(__name__)

LOCAL_OWNER = "anonymous"  # the owner lamindb gives an instance made without a login
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 32)  # seconds, about a minute in all: a restarting server is back by then
DATABASE_WAIT = (
    20  # seconds a check waits out another process's lock on a SQLite registry (a commit takes less)
)
JOBS_DATABASE_WAIT = 60  # seconds a job waits for a write lock: several jobs write one SQLite file
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

    def check_database(self, role: str) -> None:
        """Refuse, in one line naming `role` (the instance's part in the build), a SQLite registry that is
        damaged or held locked by another process; a PostgreSQL one is its server's to keep."""
        local = self.db_url is None and self.sqlite_path.exists()
        if local and (problem := database_problem(self.sqlite_path)):
            raise SourceError(f"{role}: {problem}")

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
            env["LAMINDB_DJANGO_DATABASE_URL"] = (
                f"sqlite:///{self.sqlite_path}?timeout={JOBS_DATABASE_WAIT}&transaction_mode=IMMEDIATE"
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


class BuiltInFolder:
    """What the demo and an atlas share: a `LocalInstance` (`instance`) this project builds, whole once its
    `summary` file is written."""

    instance: LocalInstance
    root: Path

    @property
    def slug(self) -> str:
        return self.instance.slug

    @property
    def storage(self) -> Path:
        return Path(self.instance.storage_root)

    @property
    def summary(self) -> Path:
        """Written last by the build: the instance is whole when it exists (a query reads it then)."""
        return self.root / "summary.json"

    @property
    def receipt(self) -> Path:
        """Written first by the build, once its instance is made: what it was made from and with."""
        return self.root / "instance.json"

    def mark_unbuilt(self) -> None:
        """A step of the build is changing it: it is not built until its summary is written again, so a
        build killed now leaves an instance the next run completes, not one a spec check reads as whole."""
        self.summary.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        """Environment variables that point lamindb at this instance and keep it off `~/.lamin` (no object
        storage credentials)."""
        return self.instance.env()

    def uploader_env(self) -> dict[str, str]:
        """`env()` and what writing to its object storage takes beyond the process's own credentials."""
        return self.env()

    @property
    def bucket_root(self) -> str | None:
        """The S3 location of its h5ads and stores; None when they lie in its local storage."""
        return None

    def connect_writer(self):
        """`lamindb` connected to it to write (`uploader_env`), new files saved to its S3 location if any."""
        return self.saving_to_bucket(connect(self.uploader_env()))

    def saving_to_bucket(self, ln):
        """`ln`, saving new files into its S3 location, if it has one."""
        if self.bucket_root:
            ln.settings.storage = self.bucket_root
        return ln


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


def database_problem(path: Path, wait: float = DATABASE_WAIT) -> str | None:
    """Why the SQLite registry at `path` cannot be used, in one line: damaged (SQLite's own check), or locked
    by another process for `wait` seconds; None when it can."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=wait)) as database:
            verdict = [row[0] for row in database.execute("PRAGMA quick_check(1)")]
    except sqlite3.OperationalError as error:
        if "locked" not in str(error):
            return f"the registry database {path} cannot be read ({error})"
        holders = _holders(path)
        return (
            f"the registry database {path} is locked by {holders} and stayed locked {wait:.0f} s: "
            "end that process's transaction (or the process), then run again"
        )
    except sqlite3.DatabaseError as error:
        verdict = [str(error)]
    if verdict != ["ok"]:
        finding = " ".join(verdict[0].split())
        return (
            f"the registry database {path} is damaged (SQLite: {finding}): nothing can be read from or "
            "registered into it safely; restore it from a copy (a demo: remove its folder, the next run "
            "builds it)"
        )
    return None


def locked_database(error: BaseException) -> str | None:
    """The one line for a SQLite registry a job found locked past its wait, None for any other error."""
    if type(error).__name__ != "OperationalError" or "database is locked" not in str(error):
        return None
    from django.db import connection

    path = Path(connection.settings_dict["NAME"])
    holders = _holders(path)
    return (
        f"the registry database {path} stayed locked by {holders} for {JOBS_DATABASE_WAIT} s: end that "
        "process's transaction (or the process), then run again"
    )


def _holders(path: Path) -> str:
    """The processes holding a lock on `path`, named: `process <pid> (<command>)`, ..."""
    return ", ".join(_process(pid) for pid in lock_holders(path)) or "another process"


def _process(pid: int) -> str:
    """`process <pid> (<command>)`, the command as Linux names it."""
    try:
        return f"process {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})"
    except OSError:
        return f"process {pid}"


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


def recreate_database(url: str) -> None:
    """Drop the PostgreSQL database a URL names, if present, and create it empty (for an instance that owns
    it: the demo, an atlas made again)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    server = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(server)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connection.close()
    log.info("PostgreSQL database %s created on %s", name, parts.hostname)
