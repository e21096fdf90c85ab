"""`make bench`: benchmarks measured here; results in bench/results/<timestamp>.json, table in BENCHMARKS.md.

Usage: python -m bench.run [--scales small,bench,registry]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent


def machine() -> dict:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "memory_gib": round(memory_gib, 1), "python": platform.python_version()}


def demo_build(scale: str) -> dict:
    """Wall time and peak memory (largest job) of building one demo scale from nothing."""
    with tempfile.TemporaryDirectory(prefix=f"cellquery-bench-{scale}-") as project:
        command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", project,
                   "--cores", "2", "demo", "--config", f"demo_scale={scale}"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMIN")}
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - started
        summary = json.loads((Path(project) / ".demo" / scale / "summary.json").read_text())
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "name": f"demo build, scale {scale}",
        "seconds": round(seconds, 1),
        "peak_rss_mib_largest_process": round(peak_mib),
        "datasets": summary["h5ad_artifacts"],
        "cells_latest": summary["collections"][-1]["cells"],
    }


def render(run: dict) -> str:
    rows = "\n".join(
        f"| {b['name']} | {b['datasets']} | {b['cells_latest']:,} | {b['seconds']} | "
        f"{b['peak_rss_mib_largest_process']} |"
        for b in run["benchmarks"]
    )
    m = run["machine"]
    return f"""# Benchmarks

Latest `make bench` ({run["timestamp"]}) on {m["cpus"]} CPUs, {m["memory_gib"]} GiB, Python {m["python"]}.
Raw results: `bench/results/{run["timestamp"]}.json`. Reproduce: `make bench` (or
`.venv/bin/python -m bench.run --scales small,bench,registry`).

| benchmark | datasets | cells (latest collection) | wall time (s) | peak RSS, largest process (MiB) |
| --- | --- | --- | --- | --- |
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--scales", default="small")
    args = parser.parse_args()
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = {"timestamp": timestamp, "machine": machine(), "benchmarks": []}
    for scale in args.scales.split(","):
        print(f"building the {scale} demo ...", flush=True)
        run["benchmarks"].append(demo_build(scale))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{timestamp}.json").write_text(json.dumps(run, indent=2) + "\n")
    (REPO / "BENCHMARKS.md").write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
