"""Where the embedded demo lives: a LaminDB instance per scale under `<project>/.demo/`, its data on local
disk or in a bucket of its own object server. Queries read it as their source, read-only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cellquery.errors import UserError
from cellquery.instances.lamin import BuiltInFolder, LocalInstance, use_settings

STORAGE_KINDS = ("local", "s3")
# What the demo holds, as a number: a change that alters its data bumps it, and the demo is rebuilt
# (3: author obs columns; census normalized as the builder computes it; 4: laid out as the public instance:
# h5ads registered in place per release, lamindb's CELLxGENE curator, a failed curation; 5: the census
# stores state the Census and dataset schema versions of their builder, `cellquery.cellxgene.release`; 6: the
# newer release is 2025-11-08, with a marmoset dataset, comorbid donors (`A || B` diseases) and 10x 3' v4; 7:
# each release's files in its own dataset schema, 2025-01-30's in 5.2.0 with a xenograft of two organisms, its
# donor of two ethnicities joined by a comma; 8: FCGR3A a marker of NK cells, not of classical monocytes;
# 9: tissue_general as the Census builder derives it; 10: the portal's citation, naming the dataset version,
# each release registered, and its store made, by the steps that make an atlas's version).
DEMO_FORMAT = 10


@dataclass(frozen=True)
class DemoInstance(BuiltInFolder):
    """One scale of the embedded demo: `<project>/.demo/<scale>/` (`<scale>-s3/` when its data live in a
    bucket of the demo's own object server)."""

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
    def instance(self) -> LocalInstance:
        return LocalInstance(self.root, self.name, self.db_url)

    @property
    def object_server(self):
        """The demo's SeaweedFS server (data under `<root>/s3/`, its bucket public-read), for an S3 demo."""
        from cellquery.storage.objectstore import ObjectServer

        return ObjectServer.at(self.root / "s3", public=(self.bucket,))

    @property
    def bucket(self) -> str:
        return f"cellquery-demo-{self.scale}"

    @property
    def data_root(self) -> str:
        """Where the demo's h5ads and census stores live: the local storage, or its bucket's root (with the
        endpoint), as the public instance's `s3://cellxgene-data-public`."""
        if self.storage_kind == "local":
            return str(self.storage)
        return f"s3://{self.bucket}?endpoint_url={self.object_server.endpoint}"

    @property
    def bucket_root(self) -> str | None:
        return self.data_root if self.storage_kind == "s3" else None

    @property
    def sqlite_path(self) -> Path:
        return self.instance.sqlite_path

    def check_seed(self, seed: int) -> None:
        """Refuse to build on a demo made from another `demo_seed`: its data would mix two seeds."""
        made = json.loads(self.receipt.read_text()).get("seed", seed) if self.receipt.exists() else seed
        if made != seed:
            raise UserError(
                f"config: demo_seed: {seed}, but the demo at {self.root} was made with seed {made}: set "
                f"demo_seed: {made}, or remove the demo (rm -rf {self.root}) and the next run makes it with "
                f"seed {seed}"
            )

    def check_format(self) -> None:
        """Refuse a demo built by a cellquery of another demo format: its data are not what the catalog says,
        and Snakemake would not build it again by itself (its target exists)."""
        if not self.summary.exists():
            return
        built = json.loads(self.summary.read_text()).get("demo_format", "5 or older")
        if built != DEMO_FORMAT:
            raise UserError(
                f"demo: {self.root} was built by another cellquery (demo format {built}, {DEMO_FORMAT} now): "
                f"remove it (rm -rf {self.root}) and the next run builds it again"
            )

    # Object storage: only the demo build writes to the bucket and holds the server's credentials; a query
    # run reads it anonymously (public-read), as a user without AWS set-up reads the public CELLxGENE bucket.
    def uploader_env(self) -> dict[str, str]:
        """`env()` and, for an S3 demo, the credentials and endpoint of its object server (the demo build)."""
        return self.env() | (self.object_server.uploader_env() if self.storage_kind == "s3" else {})


def use_demo_settings(demo: DemoInstance, *, fresh: bool = False) -> None:
    """Point lamindb_setup at the demo's settings and cache (never `~/.lamin`) without connecting, as hashing
    files needs; `fresh`: no current instance either, for creating it."""
    use_settings(demo.instance.settings_env() if fresh else demo.env())
