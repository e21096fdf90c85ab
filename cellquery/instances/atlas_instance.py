"""Where one's own atlas lives: a LaminDB instance per atlas under `<project>/.cellquery/atlas/<name>/`,
laid out as the public `laminlabs/cellxgene`: h5ads, a `cellxgene-census` collection version per ingest and a
Census-shaped store per version (`cell-census/<version>/soma`), on disk or in an S3 location. `ingest` writes
it; queries read it as their source (`source.instance: atlas:<name>`), read-only."""

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
    data_root: str | None = None  # an S3 location of its h5ads and stores; its folder's storage when None

    @classmethod
    def of(
        cls, project: Path, name: str, db_url: str | None = None, data_root: str | None = None
    ) -> AtlasInstance:
        """The atlas `name` of a project, with the database and data location its first ingest made it with
        (`db_url`, a PostgreSQL URL, and `data_root`, an S3 location, for one not made yet; others for one
        made are refused in one line)."""
        made = cls(project, name).receipt
        if not made.exists():
            return cls(project, name, db_url, data_root)
        receipt = json.loads(made.read_text())
        db = receipt.get("db", "")
        recorded = cls(project, name, db if db.startswith("postgresql") else None, receipt.get("data_root"))
        for key, given, held, default in [
            ("atlas_db_url", db_url, recorded.db_url, "SQLite"),
            ("atlas_storage", data_root, recorded.data_root, "its folder"),
        ]:
            if given and given != held:
                raise UserError(
                    f"config: {key}: the atlas {name} was made on {held or default}: give that, or remove "
                    f"the atlas (rm -rf {made.parent}) to make it anew on {given}"
                )
        return recorded

    @property
    def root(self) -> Path:
        return self.project.resolve() / ATLAS_DIR / self.name

    @property
    def instance(self) -> LocalInstance:
        return LocalInstance(self.root, f"cellquery-atlas-{self.name}", self.db_url)

    @property
    def bucket_root(self) -> str | None:
        return self.data_root
