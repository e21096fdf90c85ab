"""Every file of a build, named once: the rules, the jobs, the tools and the tests derive paths from here.

`QueryFiles("kidney-immune")` names one query's files; `QueryFiles("{query}")` the same files as the
Snakemake patterns the rules declare. Everything lives under `results/<query>/` and `logs/<query>/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS = Path("results")
LOGS = Path("logs")
SLICES = Path("slices")  # shared by the queries of every build: one slice per artifact and cell criteria
BUILD_TABLE = RESULTS / "build.tsv"  # one row per query of the build (and build.json beside it)
BUILD_JSON = RESULTS / "build.json"
BUILD_REPORT = RESULTS / "report.html"  # `make report` of the whole build
BUILD_LOG = LOGS / "build.log"
TARGET_LOG = LOGS / "target-instance.log"
DEMO_LOG_DIR = LOGS / "demo"
# The build's own files beside the queries' folders (`results/<name>/`, `logs/<name>/`): no query may take
# one's name
BUILD_FILES = (BUILD_TABLE, BUILD_JSON, BUILD_REPORT, BUILD_LOG, TARGET_LOG, DEMO_LOG_DIR)
EXPORT_SUFFIXES = {"zarr": ".zarr", "obs_parquet": ".obs.parquet"}  # the formats beside the h5ad
ZARR_ROOT = ".zgroup"  # the root group's metadata in a zarr format 2 store


@dataclass(frozen=True)
class QueryFiles:
    name: str
    root: Path = RESULTS

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def query(self) -> Path:
        """The resolved query (`resolve`): criteria, gene ids, collection, census store, storage settings."""
        return self.dir / "query.json"

    @property
    def manifest(self) -> Path:
        """The matching artifacts (`resolve`), one row each, with how each is read."""
        return self.dir / "manifest.tsv"

    @property
    def checked(self) -> Path:
        """What the spec check at parse time found (query and manifest), for this run's `resolve` to write
        instead of asking the registry again; removed by `resolve`."""
        return self.dir / ".checked.json"

    @property
    def plan(self) -> Path:
        return self.dir / "plan.tsv"

    def shard(self, number: int | str) -> Path:
        """A shard job's receipt: its artifacts and their slices."""
        return self.dir / "shards" / f"{number}.json"

    def read_receipt(self, uid: str) -> Path:
        """How an artifact was read for its slice: the cached copy's path, or the stream and its bytes."""
        return self.dir / "cache" / f"{uid}.json"

    @property
    def census(self) -> Path:
        """The census route's slice (`census`)."""
        return self.dir / "census.h5ad"

    @property
    def result(self) -> Path:
        """The validated result (`assemble`)."""
        return self.dir / f"{self.name}.h5ad"

    def export(self, fmt: str) -> Path:
        """The result in another format (`export`): `zarr` or `obs_parquet`."""
        return self.dir / f"{self.name}{EXPORT_SUFFIXES[fmt]}"

    def tracked_export(self, fmt: str) -> Path:
        """The file Snakemake tracks of an export: a zarr store by its root group's metadata (a directory
        output would get Snakemake's `.snakemake_timestamp` inside, a stray file in the store and in the
        artifact registered from it)."""
        store = self.export(fmt)
        return store / ZARR_ROOT if fmt == "zarr" else store

    @property
    def validation(self) -> Path:
        return self.dir / "validation.json"

    @property
    def receipt(self) -> Path:
        """What `register` registered: artifact, version, hash, lineage inputs."""
        return self.dir / "receipt.json"

    @property
    def register_intent(self) -> Path:
        """The registration journal a crashed `register` is recovered from."""
        return self.dir / ".register-intent.json"

    def report(self, page: str) -> Path:
        return self.dir / "report" / page

    @property
    def logs(self) -> Path:
        """The query's job logs, one per step (and per shard)."""
        return LOGS / self.name

    def log(self, step: str) -> Path:
        return self.logs / f"{step}.log"


def slice_path(cells_digest: str, content: str) -> Path:
    """A dataset file's slice by the cell criteria, genes and obs columns of `cells_digest`: any query of any
    build asking the same of the same file reads this one file. `content` names the file by what it holds
    (`slice_content`): a release carrying a dataset unchanged (a new artifact, the same bytes) reuses it."""
    return SLICES / cells_digest / f"{content}.h5ad"


def slice_content(entry) -> str:
    """A manifest row's file by its dataset and its registry hash (base64url: safe in a file name)."""
    return f"{entry['dataset_id']}-{entry['hash']}"


def export_of(tracked: Path) -> Path:
    """The export a tracked file stands for (`QueryFiles.tracked_export`)."""
    return tracked.parent if tracked.name == ZARR_ROOT else tracked


def build_file_named(name: str) -> Path | None:
    """The build's own file a query of this name would collide with (`BUILD_FILES`)."""
    return next((path for path in BUILD_FILES if path.name == name), None)
