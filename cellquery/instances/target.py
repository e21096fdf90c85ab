"""The target: the LaminDB instance a build writes into (results, exports, lineage), never its source.

By default the embedded target, a local instance under `<project>/.cellquery/target/` that the first run
creates (rule `target_instance`); `target_db_url` and `target_storage` say where it keeps its database and
files. The config's `target` names a user's own instance instead (`owner/name`, connected as `lamin connect`
left it). The source artifacts a result was made from are recorded in the target zero-copy, as lamindb's
transfer records them: the same uid, key and hash, pointing at the source's files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cellquery.errors import SourceError
from cellquery.files.atomic import write_json
from cellquery.instances.lamin import LocalInstance, connect, mark_offline, quiet_import, use_settings
from cellquery.instances.zero_copy import bare_artifact

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(".cellquery") / "target"
EMBEDDED_NAME = "cellquery-results"


@dataclass(frozen=True)
class Target:
    """Where results go: `slug` empty for the embedded instance (`embedded`), else a user's own."""

    slug: str
    embedded: LocalInstance

    @classmethod
    def from_config(cls, config: dict, project: Path) -> Target:
        """The target a run's config names; an embedded one on PostgreSQL keeps a folder per database."""
        db_url = config.get("target_db_url") or None
        folder = EMBEDDED_DIR.with_name(f"target-{db_url.rsplit('/', 1)[-1]}") if db_url else EMBEDDED_DIR
        embedded = LocalInstance(
            project.resolve() / folder, EMBEDDED_NAME, db_url, config.get("target_storage") or None
        )
        return cls(config.get("target") or "", embedded)

    @property
    def is_embedded(self) -> bool:
        return not self.slug

    @property
    def name(self) -> str:
        return self.embedded.slug if self.is_embedded else self.slug

    @property
    def receipt(self) -> Path:
        """Written once the embedded target is made (the input of every step that writes into it)."""
        return self.embedded.root / "instance.json"

    def settings_env(self) -> dict[str, str]:
        """Where lamindb_setup keeps its settings and cache in a step that does not connect: the embedded
        target's folder; a user's own target uses the user's (`~/.lamin`)."""
        return self.embedded.settings_env() if self.is_embedded else {}

    def connect(self):
        """This process connected to the target; returns `lamindb`."""
        if self.is_embedded:
            self.embedded.check_database("target")
            return connect(self.embedded.env())
        use_settings({})  # the user's own settings, where `lamin connect` left them
        ln = quiet_import()
        try:
            ln.connect(self.slug)
        except Exception as error:  # lamindb raises many kinds here: name what happened, in one line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SourceError(f"target: cannot connect to {self.slug!r} ({reason})") from None
        mark_offline(ln)
        return ln

    def create(self) -> None:
        """Make the embedded target, with the organisms (results bring their own ontology terms), unless
        another run sharing it made it: runs take turns; write the receipt."""
        import fcntl

        self.embedded.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.embedded.root.with_name(f"{self.embedded.root.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            made = self.embedded.exists and (self.embedded.root / "made").exists()
            ln = connect(self.embedded.env()) if made else self._made()
            instance = ln.setup.settings.instance
            receipt = {"slug": self.name, "storage": self.embedded.storage_root, "db": instance.db}
            write_json(self.receipt, receipt)
        log.info("target instance %s ready at %s", self.name, self.embedded.root)

    def _made(self):
        """The embedded target made afresh, its organisms saved; marked complete last."""
        ln = self.embedded.create()
        import bionty as bt

        from cellquery.cellxgene.ontology import ORGANISMS

        for ontology_id, (name, scientific_name) in ORGANISMS.items():
            bt.Organism(name=name, ontology_id=ontology_id, scientific_name=scientific_name).save()
        (self.embedded.root / "made").touch()  # complete: a run sharing the target uses it as it is
        return ln


def record_inputs(ln, query: dict, manifest: pd.DataFrame, uids: list[str]) -> list:
    """The source artifacts `uids` (manifest rows, or the census store) as records of the target, made
    zero-copy where missing: their storage locations too, owned by the source instance, so the target never
    writes there."""
    census = query["census"]
    rows = {row["uid"]: row for row in manifest.to_dict("records")}
    rows[census["uid"]] = {
        "uid": census["uid"],
        "key": census["key"],
        "otype": "tiledbsoma",
        **census["record"],
    }
    known = set(ln.Artifact.filter(uid__in=uids).values_list("uid", flat=True))
    bare = [bare_artifact(ln, rows[uid], query["instance"]) for uid in uids if uid not in known]
    missing = [artifact for artifact in bare if not _renamed_same_file(ln, artifact)]
    if missing:
        ln.Artifact.objects.bulk_create(missing)
        log.info("recorded %d source artifacts in the target, zero-copy", len(missing))
    return list(ln.Artifact.filter(uid__in=uids))


def _renamed_same_file(ln, artifact) -> bool:
    """Whether the target holds the same file (storage, key and hash: unique together) under another uid, as
    after the source registered it anew (a rebuilt demo); that record then takes the source's current uid,
    its earlier runs' lineage kept."""
    same = ln.Artifact.objects.filter(storage_id=artifact.storage_id, key=artifact.key, hash=artifact.hash)
    return same.update(uid=artifact.uid) > 0
