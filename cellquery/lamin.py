"""Connecting to a LaminDB instance: the embedded demo (offline, inside the project) or a remote slug."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEMO_OWNER = "anonymous"


@dataclass(frozen=True)
class DemoInstance:
    """Where one scale of the embedded demo lives: `<project>/.demo/<scale>/`."""

    project: Path
    scale: str
    db_url: str | None = None  # a postgresql:// URL; SQLite inside the storage when None

    @property
    def root(self) -> Path:
        return self.project.resolve() / ".demo" / self.scale

    @property
    def name(self) -> str:
        return f"cellquery-demo-{self.scale}"

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
        if self.db_url is None:
            # Several Snakemake jobs write one SQLite file: wait for the lock instead of failing.
            env["LAMINDB_DJANGO_DATABASE_URL"] = (
                f"sqlite:///{self.sqlite_path}?timeout=60&transaction_mode=IMMEDIATE"
            )
        return env


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


def connect(env: dict[str, str]):
    """Point this process at an instance (before lamindb is imported) and return `lamindb`."""
    os.environ.update(env)
    ln = quiet_import()
    mark_offline(ln)
    return ln
