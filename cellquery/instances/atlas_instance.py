"""Where one's own atlas lives: a LaminDB instance per atlas under `<project>/.cellquery/atlas/<name>/`,
laid out as the public `laminlabs/cellxgene`: h5ads, a `cellxgene-census` collection version per ingest and a
Census-shaped store per version (`cell-census/<version>/soma`). `ingest` writes it; queries read it as their
source (`source.instance: atlas:<name>`), read-only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cellquery.errors import UserError
from cellquery.instances.lamin import BuiltInFolder, LocalInstance

ATLAS_PREFIX = "atlas:"  # a spec's `source.instance` for an atlas of this project: `atlas:<name>`
ATLAS_DIR = Path(".cellquery") / "atlas"


@dataclass(frozen=True)
class AtlasInstance(BuiltInFolder):
    """One atlas: its instance, the submissions `ingest` made of its files, a receipt per version."""

    project: Path
    name: str
    db_url: str | None = None  # a postgresql:// URL; SQLite inside the storage when None

    @classmethod
    def of(cls, project: Path, name: str, db_url: str | None = None) -> AtlasInstance:
        """The atlas `name` of a project, with the database its first ingest made it with (`db_url`, a
        PostgreSQL URL, for one not made yet; another for one made is refused in one line)."""
        made = cls(project, name).receipt
        if not made.exists():
            return cls(project, name, db_url)
        db = json.loads(made.read_text()).get("db", "")
        recorded = db if db.startswith("postgresql") else None
        if db_url and db_url != recorded:
            raise UserError(
                f"config: atlas_db_url: the atlas {name} was made on {recorded or 'SQLite'}: give its "
                f"database, or remove the atlas (rm -rf {made.parent}) to make it anew on {db_url}"
            )
        return cls(project, name, recorded)

    @property
    def root(self) -> Path:
        return self.project.resolve() / ATLAS_DIR / self.name

    @property
    def instance(self) -> LocalInstance:
        return LocalInstance(self.root, f"cellquery-atlas-{self.name}", self.db_url)
