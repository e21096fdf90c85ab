"""B8: a dataset build of eight specs in one Snakemake run vs the same specs one invocation each.

Both ways run in the bench project on the S3 bench demo, each from nothing: before each, the specs' results,
logs and slices are removed, and each way downloads into a cache of its own. The build runs first, so the
invocations one by one find its registered versions and reuse them (less work for the baseline, not more).
What each way read comes from its shard logs and read receipts.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

from cellquery.files.layout import SLICES, QueryFiles
from cellquery.query.runfiles import read_manifest
from cellquery.spec.query_spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "bench" / "b8").glob("*.yaml"))
DOWNLOADED = re.compile(r"artifact (\w+) \(.*\): ([\d.]+) MB in ")
SLICED = re.compile(r"artifact (\w+) sliced \[")
CONFIG = ["demo_scale=bench", "demo_storage=s3"]


def clear(project: Path) -> None:
    """Nothing of the specs left: results, logs, slices."""
    for spec in SPECS:
        clear_query(project, spec)


def clear_query(project: Path, spec_path: Path, logs: bool = True) -> None:
    """A query's results and slices (and logs) removed, so that its run makes them again."""
    spec = load_spec(spec_path)
    files = QueryFiles(spec.name)
    for folder in (files.dir, SLICES / spec.cells_digest, *([files.logs] if logs else [])):
        shutil.rmtree(project / folder, ignore_errors=True)


def commands(way: str, cache: Path) -> list[list[str]]:
    """The `--config` arguments of each snakemake invocation of a way."""
    config = [*CONFIG, f"cache_dir={cache}"]
    if way == "build":
        return [[f"queries=[{','.join(map(str, SPECS))}]", *config]]
    return [[f"query={spec}", *config] for spec in SPECS]


def reads(project: Path) -> dict:
    """Downloads, streams and slices made, from the logs and receipts the specs' runs left."""
    files = [QueryFiles(load_spec(spec).name) for spec in SPECS]
    logs = "".join(p.read_text() for f in files for p in (project / f.logs).glob("shard-*.log"))
    downloads = [(match[1], float(match[2])) for match in DOWNLOADED.finditer(logs)]
    per_artifact = Counter(uid for uid, _ in downloads)
    receipts = [json.loads(p.read_text()) for f in files for p in (project / f.dir / "cache").glob("*.json")]
    streamed = [receipt for receipt in receipts if receipt.get("fetch") == "stream"]
    needed = Counter(uid for f in files for uid in read_manifest(project / f.manifest)["uid"])
    return {
        "artifacts": len(needed),
        "shared_artifacts": sum(count > 1 for count in needed.values()),
        "asked_for": sum(needed.values()),
        "downloads": len(downloads),
        "downloaded_twice": sorted(uid for uid, count in per_artifact.items() if count > 1),
        "download_mb": round(sum(mb for _, mb in downloads), 1),
        "streams": len(streamed),
        "stream_mb": round(sum(receipt.get("bytes_moved", 0) for receipt in streamed) / 1e6, 1),
        "slices_made": len(SLICED.findall(logs)),
    }
