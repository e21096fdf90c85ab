"""The source a query reads: the embedded demo, an atlas of this project (`atlas:<name>`, made by `ingest`),
or a LaminDB instance named by its slug (the public `laminlabs/cellxgene`, or a user's own). A source is only
ever read: the demo's and an atlas's database refuse writes, and an instance by slug is queried through
`ln.DB`, lamindb's read-only access."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from cellquery.errors import SourceError
from cellquery.instances.atlas_instance import ATLAS_PREFIX, AtlasInstance
from cellquery.instances.demo_instance import DemoInstance
from cellquery.instances.lamin import LocalInstance, connect, mark_offline, quiet_import, use_settings

DEMO = "demo"  # a spec's `source.instance` for the embedded demo


@dataclass(frozen=True)
class Registry:
    """The source's registries, as `lamindb` (the demo, connected) or `ln.DB(slug)` (by slug) offers them,
    and the instance's identity (`slug`, `uid`, `storage_root`)."""

    Artifact: Any
    Collection: Any
    ULabel: Any
    User: Any
    Feature: Any
    bionty: Any
    instance: dict


@dataclass(frozen=True)
class Source:
    """What a spec's `source.instance` names: `demo` (this project's embedded demo), `atlas:<name>` (an atlas
    of this project) or `owner/name`."""

    slug: str
    demo: DemoInstance

    @property
    def is_demo(self) -> bool:
        return self.slug == DEMO

    @cached_property
    def atlas(self) -> AtlasInstance | None:
        """The atlas of this project a spec names (`atlas:<name>`), or None."""
        if not self.slug.startswith(ATLAS_PREFIX):
            return None
        return AtlasInstance.of(self.demo.project, self.slug.removeprefix(ATLAS_PREFIX))

    @property
    def local(self) -> LocalInstance | None:
        """The instance this project keeps in a folder (the demo, an atlas); None for one by slug."""
        if self.is_demo:
            return self.demo.instance
        return self.atlas.instance if self.atlas else None

    @property
    def summary(self) -> Path | None:
        """Written last by the demo build or an ingest: the local source is whole once it exists."""
        if self.is_demo:
            return self.demo.summary
        return self.atlas.summary if self.atlas else None

    def built_at(self) -> int | None:
        """When the demo or atlas was last built (what a check's findings hold for); None for a slug."""
        summary = self.summary
        return summary.stat().st_mtime_ns if summary and summary.exists() else None

    def settings_env(self) -> dict[str, str]:
        """lamindb_setup's settings and cache as `resolve` used them, for a step that does not connect (a
        shard: its downloads go to the cache `resolve` planned): the local instance's; for a slug, the
        user's."""
        return self.local.settings_env() if self.local else {}

    def registry(self) -> Registry:
        """This process connected to the source, read-only."""
        return self._local_registry() if self.local else self._slug_registry()

    def _local_registry(self) -> Registry:
        if not self.local.exists or not self.summary.exists():
            how = (
                "run `make demo`" if self.is_demo else "ingest it: snakemake ingest --config atlas=<its spec>"
            )
            raise SourceError(f"source.instance: {self.slug} at {self.local.root} is not built ({how})")
        ln = connect(self.local.env(), read_only=True)
        import bionty

        instance = ln.setup.settings.instance
        identity = {"slug": self.local.slug, "uid": instance.uid, "storage_root": str(instance.storage.root)}
        return Registry(ln.Artifact, ln.Collection, ln.ULabel, ln.User, ln.Feature, bionty, identity)

    def _slug_registry(self) -> Registry:
        use_settings({})  # the user's own settings (`~/.lamin`): lamindb finds the instance there or online
        ln = quiet_import()
        mark_offline(ln)
        try:
            db = ln.DB(self.slug)
            info = db._instance_info
        except Exception as error:  # lamindb raises many kinds here: name what happened, in one line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SourceError(
                f"source.instance: cannot connect to {self.slug!r} ({reason}); "
                "without a network only the embedded demo (instance: demo) is reachable"
            ) from None
        identity = {"slug": self.slug, "uid": info.uid, "storage_root": str(info.storage.root_as_str)}
        return Registry(db.Artifact, db.Collection, db.ULabel, db.User, db.Feature, db.bionty, identity)


def source_for(spec, demo: DemoInstance) -> Source:
    """The source a spec reads."""
    return Source(spec.instance, demo)
