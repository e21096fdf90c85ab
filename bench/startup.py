"""B10: per job kind, seconds from the job's process start to its first work, read from the job logs of the
run B1 and B7 made (each job logs `cellquery.workflow.jobs.STARTUP_LINE` once)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from cellquery.workflow.jobs import STARTUP_LINE

AIM_SECONDS = 1.0
KINDS = ("resolve", "shard", "census", "assemble", "register", "describe")
STARTUP = re.compile(re.escape(STARTUP_LINE).replace(re.escape("%.2f"), r"([\d.]+)"))


def startup_seconds(logs: Path) -> dict[str, dict]:
    """Per job kind, the start-up of each of its jobs (the last one each log holds): median and largest wall
    seconds, and the median CPU seconds (which load on the machine does not inflate)."""
    kinds = {}
    for kind in KINDS:
        found = [_last_startup(log) for log in sorted(logs.glob(f"{kind}*.log"))]
        found = [f for f in found if f]
        if not found:
            raise RuntimeError(f"B10: no start-up line in {logs}/{kind}*.log")
        walls, cpus = zip(*found, strict=True)
        kinds[kind] = {
            "jobs": len(found),
            "seconds": round(statistics.median(walls), 2),
            "max_seconds": max(walls),
            "cpu_seconds": round(statistics.median(cpus), 2),
        }
    return kinds


def _last_startup(log: Path) -> tuple[float, float] | None:
    matches = STARTUP.findall(log.read_text())
    return tuple(map(float, matches[-1])) if matches else None


def table(b10: dict) -> str:
    """B10 in BENCHMARKS.md."""
    lines = [
        "",
        f"B10, job start-up (the job logs of B1's and B7's runs; aim at most {AIM_SECONDS} s each): seconds",
        "from a job's process start to its first work: interpreter, imports, the job unpickled, the registry",
        "connected where the job needs it. Shards and the census slice start side by side on 2 cores.",
        "",
        "| job kind | jobs | s (median) | s (largest) | CPU s (median) | aim met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, k in b10["kinds"].items():
        met = "yes" if k["seconds"] <= AIM_SECONDS else "no"
        cells = [kind, k["jobs"], k["seconds"], k["max_seconds"], k["cpu_seconds"], met]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"
