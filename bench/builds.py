"""B8: a dataset build of eight specs in one Snakemake run vs the same specs one invocation each.

Each way runs in a project directory of its own under `.bench/b8/` (the project's `.demo` linked in, so both
use the S3 bench demo) with a cache of its own: both start with nothing downloaded and nothing sliced. The
build runs first, so the invocations one by one find its registered versions and reuse them (less work for
the baseline, not more). What each way read comes from its shard logs and read receipts.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPECS = [REPO / "bench" / "blood-immune.yaml", *sorted((REPO / "bench" / "b8").glob("*.yaml"))]
DOWNLOADED = re.compile(r"artifact (\w+) \(.*\): ([\d.]+) MB in ")
SLICED = re.compile(r"artifact (\w+) sliced \[")
CONFIG = ["demo_scale=bench", "demo_storage=s3"]


def workdir(project: Path, way: str) -> Path:
    """A fresh project directory for one way, the project's demos linked in."""
    directory = project / ".bench" / "b8" / way
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    (directory / ".demo").symlink_to(project / ".demo")
    return directory


def commands(way: str, directory: Path) -> list[list[str]]:
    """The `--config` arguments of each snakemake invocation of a way."""
    config = [*CONFIG, f"cache_dir={directory / 'cache'}"]
    if way == "build":
        return [[f"queries=[{','.join(map(str, SPECS))}]", *config]]
    return [[f"query={spec}", *config] for spec in SPECS]


def reads(directory: Path) -> dict:
    """Downloads, streams and slices made, from the logs and receipts a way left."""
    logs = "".join(path.read_text() for path in (directory / "logs").glob("*/shard-*.log"))
    downloads = Counter(match[1] for match in DOWNLOADED.finditer(logs))
    receipts = [json.loads(path.read_text()) for path in (directory / "results").glob("*/cache/*.json")]
    streamed = [receipt for receipt in receipts if receipt.get("fetch") == "stream"]
    manifests = [_uids(path) for path in (directory / "results").glob("*/manifest.tsv")]
    needed = Counter(uid for uids in manifests for uid in uids)
    return {
        "artifacts": len(needed),
        "shared_artifacts": sum(count > 1 for count in needed.values()),
        "asked_for": sum(needed.values()),
        "downloads": sum(downloads.values()),
        "downloaded_twice": sorted(uid for uid, count in downloads.items() if count > 1),
        "download_mb": round(sum(float(m[2]) for m in DOWNLOADED.finditer(logs)), 1),
        "streams": len(streamed),
        "stream_mb": round(sum(receipt.get("bytes_moved", 0) for receipt in streamed) / 1e6, 1),
        "slices_made": len(SLICED.findall(logs)),
    }


def _uids(manifest: Path) -> set[str]:
    header, *rows = manifest.read_text().splitlines()
    column = header.split("\t").index("uid")
    return {row.split("\t")[column] for row in rows}
