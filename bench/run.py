"""`make bench`: each figure a ratio of runs made side by side in this invocation, at `demo_scale: bench`
(B1 also at `small` and, as B1a, at `atlas`; B4 at `registry`).

Results go to bench/results/<timestamp>.json and a table in BENCHMARKS.md.
Usage: python -m bench.run [--project DIR] [--only ID]   (DIR holds .demo/<scale>; built there when absent)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from bench import startup
from bench.builds import clear_query
from bench.plot import plot_scales
from cellquery.demo.catalog import generation_batches
from cellquery.files.layout import QueryFiles
from cellquery.query.runfiles import read_manifest
from cellquery.spec.query_spec import load_spec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SCALES_PLOT = REPO / "bench" / "b1-scales.svg"  # B1 at each scale, drawn by `render`
BIN = Path(sys.executable).parent
QUERY = REPO / "bench" / "blood-immune.yaml"
REGISTRY_QUERY = REPO / "bench" / "registry-all.yaml"
ATLAS_QUERY = REPO / "bench" / "immune-atlas.yaml"
B1_QUERIES = {"small": ATLAS_QUERY, "bench": QUERY, "atlas": ATLAS_QUERY}  # B1's spec at each scale
DEMO_MINUTES = {"small": 3, "bench": 13, "registry": 20, "atlas": 25}  # to build each demo, on 2 cores
# (atlas: measured 25 min while other builds ran; 14 GB on disk)
AIMS = {
    "B1": "pipeline peak memory <= 0.2 x baseline, wall time <= 0.8 x baseline",
    "B1a": "pipeline peak memory <= 0.15 x baseline, wall time <= 0.6 x baseline",
    "B1f": "the pipeline within 1.5 x the floor",
    "B2": "census slice not slower than cellxgene_census.get_anndata (ratio <= 1)",
    "B3": "slicing within 2 x the h5py floor",
    "B4": "resolve plus DAG under 0.2 s per artifact",
    "B5": "rerun with nothing changed under 10 s",
    "B7": "recorded: no aim (#6 asks for the report, not its speed)",
    "B8": "the build <= 0.5 x the wall time; each shared artifact read once",
    "B11": "a bad spec rejected within snakemake's start plus a little: <= 3 x `snakemake --version`",
    "B12": "within 1.2 x the official read; peak memory under 2 GB for any selection",
    "B13": "adding 2 datasets to an atlas store <= 0.1 x its first build (only they are read and written)",
}
CENSUS_SCALE = Path(".bench") / "census-scale"  # B12's store, under the project
B14_NAME = "b14-kidney"  # B14's query: the shipped kidney-immune under a name of its own
REJECTED = {
    "schema": REPO / "bench" / "b11" / "schema-error.yaml",
    "registry": REPO / "bench" / "b11" / "registry-error.yaml",
}
REPEATS = 3  # runs of each side of a figure (alternating pairs): their medians, and the ratios' spread
BUILD_OF_MANY = 500  # B11: specs in the build with one typo
AUTO_AIM, SEED_BYTES_AIM = 1.1, 0.5  # B9


# Published loader figures, beside ours (`samples/s`; other hardware, other data, remote storage).
PUBLISHED_LOADERS = {
    "lamin": ("Collection.mapped() in a DataLoader", 1500, "lamin arrayloader benchmarks, cached h5ad"),
    "census": ("tiledbsoma-ml ExperimentDataset", 2500, "Census PyTorch loader, streaming from S3"),
}


def machine() -> dict:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = platform.python_version()
    figures = {"cpus": os.cpu_count(), "memory_gib": round(memory_gib, 1), "python": python}
    return figures | {"cold_page_cache": drop_page_cache()}


def env() -> dict[str, str]:
    """The environment of a measured command: no LaminDB pointer."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LAMIN")}


def measured(
    command: list[str], cwd: Path, extra_env: dict | None = None, exit_code: int = 0, cold: bool = False
) -> dict:
    """Wall time and the peak RSS of the largest process of a command (through bench/measure.py), which must
    end with `exit_code`; `cold`: from a cold page cache (`drop_page_cache`)."""
    if cold:
        drop_page_cache()
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "python"), str(REPO / "bench" / "measure.py"), *command],
        cwd=cwd,
        env=env() | (extra_env or {}),
        capture_output=True,
        text=True,
    )
    if result.returncode != exit_code:
        raise RuntimeError(f"{' '.join(command)} ended with {result.returncode}:\n{result.stderr[-3000:]}")
    peak = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": peak}


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only; False elsewhere), so that a measured side reads its files
    from disk as a first run does: two sides of a comparison over the same files start alike, not the second
    with what the first read still in memory."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def snakemake(project: Path, *args: str) -> list[str]:
    return [
        str(BIN / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(project),
        "--workflow-profile",  # this checkout's, whatever the project directory holds
        str(REPO / "profiles" / "default"),
        "--cores",
        "2",
        *args,
    ]


def ensure_demo(project: Path, scale: str, minutes: int | None = None, storage: str = "local") -> None:
    directory = scale if storage == "local" else f"{scale}-{storage}"
    if not (project / ".demo" / directory / "summary.json").exists():
        minutes = minutes or DEMO_MINUTES[scale]
        print(f"building the {directory} demo (about {minutes} minutes) ...", flush=True)
        config = ["--config", f"demo_scale={scale}", f"demo_storage={storage}"]
        subprocess.run(snakemake(project, "demo", *config), check=True, env=env())


def object_storage(project: Path) -> dict:
    """B9 (bench/object_storage.py): each way of slicing the largest file over S3 in its own process, the
    bytes it moves counted by a proxy in this one."""
    from bench import object_storage as b9
    from bench.proxy import CountingProxy
    from cellquery.instances.demo_instance import DemoInstance

    server = DemoInstance(project, "bench", storage_kind="s3").object_server.ensure_running()
    script = [str(BIN / "python"), str(REPO / "bench" / "object_storage.py")]
    subprocess.run([*script, "setup", str(project)], check=True, env=env() | server.uploader_env())
    setup = json.loads(b9.setup_path(project).read_text())
    proxy, runs = CountingProxy(server.port), {}
    for _, query, way in itertools.product(range(REPEATS), b9.SHARES, b9.WAYS):  # every way, then again
        proxy.reset()
        command = [*script, way, query, str(project), proxy.endpoint]
        timing = measured(command, project, extra_env=server.uploader_env(), cold=True)
        done = json.loads(b9.setup_path(project).with_name(f"{query}-{way}.json").read_text())
        run = {"query": query, **done, **timing, "mb_moved": round(proxy.received / 1e6, 1)}
        runs.setdefault((query, way), []).append(run)
    proxy.close()
    rows = [way_row(ways) for ways in runs.values()]
    cells = {(row["query"], row["cells"]) for row in rows if row["way"] != "census"}
    if len(cells) != len(b9.SHARES):
        raise RuntimeError(f"B9: the ways selected different cells: {sorted(cells)}")
    entry = setup["entry"]
    file = {key: entry[key] for key in ("key", "size", "n_obs")}
    return {"file": file, "queries": setup["queries"], "rows": rows}


def way_row(runs: list[dict]) -> dict:
    """B9's row of one way and query: the medians of its runs, its seconds' spread, and the runs."""
    medians = {
        key: statistics.median(run[key] for run in runs) for key in ("seconds", "peak_rss_mib", "mb_moved")
    }
    spread = [min(run["seconds"] for run in runs), max(run["seconds"] for run in runs)]
    return runs[-1] | medians | {"spread_seconds": spread, "runs": runs}


def dataset_builds(project: Path) -> dict:
    """B8 (bench/builds.py): eight specs over the S3 bench demo built in one run, then one invocation each,
    in alternating pairs (`paired`); the detail of each way's last run."""
    from bench import builds

    details = {}

    def way_of(way: str):
        def run() -> dict:
            builds.clear(project)
            cache = project / ".bench" / "b8" / way / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            invocations = builds.commands(way, cache)
            runs = [measured(snakemake(project, "--config", *config), project) for config in invocations]
            details[way] = {
                "seconds": round(sum(run["seconds"] for run in runs), 2),
                "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
                "invocations": len(runs),
                **builds.reads(project),
            }
            return details[way]

        return run

    name = "eight specs: one build vs one invocation each (S3)"
    row = paired("B8", name, way_of("one_by_one"), way_of("build"))
    return {"specs": [str(spec.relative_to(REPO)) for spec in builds.SPECS], **details, "row": row}


def builds_row(b8: dict) -> dict:
    """B8's row; results before the pairs hold one run of each way."""
    name = "eight specs: one build vs one invocation each (S3)"
    return b8.get("row") or compared("B8", name, b8["one_by_one"], b8["build"])


def builds_table(b8: dict | None) -> str:
    """B8's detail: what each way read."""
    if not b8:
        return ""
    lines = [
        "",
        f"B8 in detail ({len(b8['specs'])} specs, `bench/b8/*.yaml`: the bench query under a name of its own",
        "and seven more; the bench demo with `demo_storage: s3`, `fetch: auto`, a cache of its own per way,",
        f"the build first; {b8['timestamp']}):",
        "",
        "| way | snakemake runs | s | peak MiB | artifacts (shared) | downloads (MB) | downloaded twice | "
        "streams (MB) | slices made |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for way in ("build", "one_by_one"):
        w = b8[way]
        cells = [
            way.replace("_", " "),
            w["invocations"],
            w["seconds"],
            w["peak_rss_mib"],
            f"{w['artifacts']} ({w['shared_artifacts']})",
            f"{w['downloads']} ({w['download_mb']:,.1f})",
            len(w["downloaded_twice"]),
            f"{w['streams']} ({w['stream_mb']:,.1f})",
            w["slices_made"],
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def rejections(project: Path) -> dict:
    """B11: seconds until a bad spec is refused (a schema error, a registry error) at the small scale, the
    default build's, against `snakemake --version`, in alternating pairs (`paired`)."""
    ensure_demo(project, "small")

    def start() -> dict:
        return measured([str(BIN / "snakemake"), "--version"], project)

    def refusal(*config: str):
        return lambda: measured(snakemake(project, "--config", *config), project, exit_code=1)

    rows = []
    for kind, spec in REJECTED.items():
        refused = refusal("demo_scale=small", f"query={spec}")
        rows.append(paired("B11", f"a {kind} error refused vs `snakemake --version`", start, refused))
    folder = build_with_one_typo(project / ".bench" / "b11-specs", BUILD_OF_MANY)
    refused = refusal("demo_scale=small", f"queries=[{folder}]")
    name = f"a build of {BUILD_OF_MANY} specs, one with a typo, refused vs `snakemake --version`"
    rows.append(paired("B11", name, start, refused))
    return {"rows": rows, "load_average_1min": round(os.getloadavg()[0], 1)}


def validation_catches(project: Path) -> dict:
    """B14 (bench/steps.py `validation-catches`): the share of injected disagreements each validation
    catches, over the small demo's kidney-immune query (built first under a name of its own)."""
    ensure_demo(project, "small")
    spec = yaml.safe_load((REPO / "config" / "queries" / "kidney-immune.yaml").read_text())
    path = project / "bench-b14.yaml"
    path.write_text(
        yaml.safe_dump(spec | {"name": B14_NAME, "output": {"key": f"cellquery/{B14_NAME}.h5ad"}})
    )
    result = f"results/{B14_NAME}/{B14_NAME}.h5ad"
    subprocess.run(snakemake(project, "--config", f"query={path}", "--", result), cwd=project, check=True)
    subprocess.run(helper("validation-catches", project, B14_NAME), cwd=project, check=True)
    return json.loads((project / "results" / B14_NAME / "b14.json").read_text())


def validation_table(b14: dict | None) -> str:
    """B14: what each validation caught of the disagreements injected."""
    if not b14:
        return ""
    share = b14["sample"]["fraction"]
    lines = [
        "",
        f"B14, what validation catches ({b14['trials']} disagreements of each kind injected into the census",
        "route of the small demo's kidney-immune query, each at a random cell, on genes the result holds;",
        f"`validation: sampled` with `validation_sample: {share}`, bands of {b14['band']} rows;",
        f"{b14['timestamp']}):",
        "",
        "| disagreement | full: caught | sampled: caught | sampled: its guarantee |",
        "| --- | --- | --- | --- |",
    ]
    for kind, caught in b14["caught"].items():
        compared = f"{b14['compared_share']:.1%} (the cells compared value by value)"
        promise = compared if "moved" in kind else "all"
        cells = [kind, *(f"{caught[mode] / b14['trials']:.1%}" for mode in ("full", "sampled")), promise]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def atlas_store(project: Path) -> dict:
    """B13: the store of `ingest`'s second version (2 datasets added to the atlas demo's 2-million-cell
    release) made from the first one's, against building the first; each from a cold page cache."""
    from bench.steps import B13_ADDED, atlas_sources

    shards = [f".demo/atlas/h5ad/shard-{n}" for n in range(len(generation_batches("atlas")))]
    subprocess.run(snakemake(project, "--config", "demo_scale=atlas", "--", *shards), cwd=project, check=True)
    first, added = step_of(project, "atlas-store-first"), step_of(project, "atlas-store-add")
    sources = atlas_sources(project)
    cells = [h5ad_cells(s.path) for s in sources]
    name = (
        f"adding {B13_ADDED} datasets ({sum(cells[-B13_ADDED:]):,} cells) to an atlas store of "
        f"{sum(cells[:-B13_ADDED]):,} cells vs its first build"
    )
    return {"rows": [paired("B13", name, first, added)]}


def h5ad_cells(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        obs = f["obs"]
        return len(obs[obs.attrs["_index"]])


def build_with_one_typo(folder: Path, count: int) -> Path:
    """`count` well-formed specs in `folder`, but for one organism misspelt in the middle one."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for number in range(count):
        organism = "humann" if number == count // 2 else "human"
        spec = {
            "name": f"b11-{number}",
            "organism": organism,
            "cells": {"tissue": "blood"},
            "genes": ["CD3E"],
        }
        (folder / f"b11-{number}.yaml").write_text(yaml.safe_dump(spec))
    return folder


def helper(name: str, project: Path, *args: str) -> list[str]:
    return [str(BIN / "python"), str(REPO / "bench" / "steps.py"), name, str(project), *args]


def step_of(project: Path, name: str, *args: str):
    """A step of bench/steps.py, measured from a cold page cache each time it is called."""
    return lambda: measured(helper(name, project, *args), project, cold=True)


def pipeline_vs_loop(project: Path, scale: str, query: Path, bench_id: str = "B1") -> dict:
    """B1 at one scale: the pipeline up to the registered result (`--cores 2`) vs the seed guide's loop (load
    each matched artifact whole, mask, concat) over the same artifacts and criteria, side by side; the
    query's results and slices removed first. Run B1 at another scale with another `scale` and `query`."""
    files = QueryFiles(load_spec(query).name)
    config = ["--config", f"demo_scale={scale}", f"query={query}"]

    def pipeline() -> dict:
        clear_query(project, query)  # the logs too: B10 reads the start-up lines of the bench query's jobs
        # B1 builds the registered dataset, as the seed guide's loop does; the report's figures come apart
        return measured(snakemake(project, str(files.receipt), *config), project, cold=True)

    def loop() -> dict:
        return measured(helper("seed-guide", project, scale, str(query)), project, cold=True)

    def floor() -> dict:
        return measured(helper("floor", project, str(query)), project, cold=True)

    # alternating, each from a cold cache; the pipeline first: the loop and the floor read its manifest, and
    # it clears the query's results (the loop's baseline.json among them)
    runs = [(pipeline(), loop(), floor()) for _ in range(REPEATS)]
    name = f"seed guide's way (load, mask, concat) vs pipeline --cores 2, at {scale} scale"
    row = from_pairs(bench_id, name, [(looped, piped) for piped, looped, _ in runs])
    least = f"the floor (the selected rows of both routes read, written once) vs pipeline, at {scale} scale"
    row["floor"] = from_pairs("B1f", least, [(floored, piped) for piped, _, floored in runs])
    receipt = json.loads((project / files.receipt).read_text())
    baseline = json.loads((project / files.dir / "baseline.json").read_text())
    manifest = read_manifest(project / files.manifest)
    return row | {
        "scale": scale,
        "query": str(query.relative_to(REPO)) if query.is_relative_to(REPO) else str(query),
        "cells": receipt["n_obs"],
        "genes": receipt["n_vars"],
        "baseline_cells": baseline["n_obs"],
        "datasets": len(manifest),
        "matched_cells": int(manifest["n_obs"].sum()),
        "matched_gb": round(manifest["size"].sum() / 1e9, 2),
    }


def b1_at(scale: str):
    """B1 at `scale` alone (its demo built first when absent), for `--only`."""

    def measure(project: Path) -> dict:
        ensure_demo(project, scale)
        return pipeline_vs_loop(project, scale, B1_QUERIES[scale], "B1a" if scale == "atlas" else "B1")

    return measure


def benchmarks(project: Path) -> list[dict]:
    config = ["--config", "demo_scale=bench", f"query={QUERY}"]
    b1 = pipeline_vs_loop(project, "bench", QUERY)
    figures = measured(snakemake(project, *config), project)
    rerun = measured(snakemake(project, *config), project)
    census_slice, official = (step_of(project, name) for name in ("census-slice", "get-anndata"))
    sliced, floor = (step_of(project, name) for name in ("slice-large", "h5py-floor"))
    return [
        b1,
        paired("B2", "census slice vs cellxgene_census.get_anndata", official, census_slice),
        paired("B3", "slicing the 220,000-cell h5ad vs reading the selected rows with h5py", floor, sliced),
        compared("B5", "rerun with nothing changed", None, rerun),
        compared("B7", "the report's figures and pages (`describe`, after B1)", None, figures),
    ]


def bench_scale(project: Path) -> list[dict]:
    """The main table's figures at bench scale (B1 with B1f, B2, B3, B5, B7) alone, for `--only`; B4 (at
    registry scale) kept from the last run."""
    ensure_demo(project, "bench")
    rows = benchmarks(project)
    previous = json.loads(latest_results().read_text())
    kept = [row | {"timestamp": when(row, previous)} for row in previous["benchmarks"] if row["id"] == "B4"]
    return [*rows[:3], *kept, *rows[3:]]


def when(row: dict, run: dict) -> str:
    """When a row was measured: its own timestamp (rows re-run alone have one), else its whole run's."""
    return row.get("timestamp") or run["timestamp"]


def loaders(project: Path) -> dict:
    """B6: loader throughput of both training routes over the bench query's registered result."""
    figures = {}
    for route in PUBLISHED_LOADERS:
        memory = measured(helper(f"loader-{route}", project), project)
        path = project / "results" / "blood-immune" / f"bench-loader-{route}.json"
        figures[route] = json.loads(path.read_text()) | {"peak_rss_mib": memory["peak_rss_mib"]}
    return figures


def loader_rows(figures: dict) -> list[str]:
    rows = []
    for route, (loader, published, source) in PUBLISHED_LOADERS.items():
        f = figures[route]
        cells = [
            f"{route}: {loader}",
            f"{f['cells']:,} ({f['batches']} x {f['batch_size']})",
            f["warmup_seconds"],
            f"{f['cells_per_second']:,.0f}",
            f["peak_rss_mib"],
            f"~{published:,} ({source})",
        ]
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    return rows


def compared(bench_id: str, name: str, baseline: dict | None, ours: dict) -> dict:
    """One row: both measurements and their ratios (ours / baseline)."""
    ratios = {
        f"ratio_{key}": round(ours[key] / baseline[key], 2) if baseline else None
        for key in ("seconds", "peak_rss_mib")
    }
    return {"id": bench_id, "name": name, "baseline": baseline, "ours": ours, **ratios}


def paired(bench_id: str, name: str, baseline, ours, repeats: int = REPEATS) -> dict:
    """One row from `repeats` alternating runs of both sides (`baseline` then `ours`, each a callable
    returning a measurement)."""
    return from_pairs(bench_id, name, [(baseline(), ours()) for _ in range(repeats)])


def from_pairs(bench_id: str, name: str, pairs: list[tuple[dict, dict]]) -> dict:
    """One row from pairs of runs (baseline, ours): each side's medians, the median of the pairs' ratios
    and their spread (lowest, highest)."""
    medians = [
        {key: statistics.median(run[key] for run in side) for key in ("seconds", "peak_rss_mib")}
        for side in zip(*pairs, strict=True)
    ]
    row = compared(bench_id, name, *medians)
    for key in ("seconds", "peak_rss_mib"):
        ratios = sorted(ours[key] / baseline[key] for baseline, ours in pairs)
        row[f"ratio_{key}"] = round(statistics.median(ratios), 2)
        row[f"spread_{key}"] = [round(ratios[0], 2), round(ratios[-1], 2)]
    return row | {"pairs": pairs}


def census_scale(project: Path) -> dict:
    """B12: cellquery's reads of a Census-scale store (`bench/census_scale.py`, built first when absent)
    against `cellxgene_census` reading the same, each side from a cold page cache; both must find the same."""
    from bench.census_scale import STEPS

    root = project / CENSUS_SCALE
    if not (root / "built.json").exists():
        subprocess.run(
            [str(BIN / "python"), "-m", "bench.census_scale", "build", str(root)], cwd=REPO, check=True
        )
    built = json.loads((root / "built.json").read_text())
    rows = []
    for step, (what, _) in STEPS.items():
        sides = {side: census_scale_step(root, step, side) for side in ("official", "ours")}
        name = (
            f"{what}, {len(built['probe_datasets']):,} datasets of a {built['cells']:,}-cell store, "
            "vs cellxgene_census"
        )
        rows.append(paired("B12", name, sides["official"], sides["ours"]))
        found = {side: json.loads((root / f"{step}-{side}.json").read_text()) for side in sides}
        if found["ours"]["result"] != found["official"]["result"]:
            raise RuntimeError(
                f"B12 {step}: ours found {found['ours']}, cellxgene_census {found['official']}"
            )
    store = {key: value for key, value in built.items() if key != "probe_datasets"}
    return {"rows": rows, "store": store}


def census_scale_step(root: Path, step: str, side: str):
    command = [str(BIN / "python"), "-m", "bench.census_scale", step, side, str(root)]
    return lambda: measured(command, REPO, cold=True)


def census_scale_table(b12: dict | None) -> str:
    """What B12's store holds and what it cost to build."""
    if not b12:
        return ""
    s = b12["store"]
    return f"""
B12's store (`bench/census_scale.py`, store only: obs, var, the presence matrix, and X for the probe's cells;
{b12["timestamp"]}): {s["cells"]:,} cells in {s["datasets"]:,} datasets, {s["genes"]:,} genes, X for
{s["probe_cells"]:,} cells; built in {s["seconds"]:,} s, {s["disk_gb"]} GB on disk, {s["peak_rss_mib"]:,} MiB
at its peak. Each B12 figure is the median of {REPEATS} alternating pairs, each side from a cold page cache;
the ratio's spread (lowest-highest of the pairs) in brackets.
"""


def registry_scale(project: Path) -> dict:
    """B4: resolve plus DAG for a query matching every artifact at registry scale, then the whole run."""
    config = ["--config", "demo_scale=registry", f"query={REGISTRY_QUERY}"]
    results = project / "results" / "registry-all"
    clear_query(project, REGISTRY_QUERY, logs=False)
    resolve = measured(snakemake(project, *config, "--until", "resolve"), project)
    dag = measured(snakemake(project, *config, "--dry-run"), project)
    whole = measured(snakemake(project, *config), project)
    artifacts = len((results / "manifest.tsv").read_text().splitlines()) - 1
    planned = resolve["seconds"] + dag["seconds"]
    return {
        "id": "B4",
        "artifacts": artifacts,
        "shards": len(list((results / "shards").glob("*.json"))),
        "resolve": resolve,
        "dag": dag,
        "whole_run": whole,
        "resolve_and_dag_per_artifact": round(planned / artifacts, 4),
        "whole_run_per_artifact": round(whole["seconds"] / artifacts, 4),
    }


def render(run: dict, saved: str) -> str:
    """BENCHMARKS.md's tables from a run's results (saved as bench/results/<saved>.json)."""
    rows = []
    builds = [builds_row(run["builds"])] if run.get("builds") else []
    parts = [run.get(key, {}) for key in ("rejections", "census_scale", "atlas_store")]
    extra = [
        *((row, run["builds"]) for row in builds),
        *((r, part) for part in parts for r in part.get("rows", [])),
    ]
    main = [*run["benchmarks"]]
    at = next(i for i, b in enumerate(main) if b["id"] == "B1")
    b1 = [main[at], *([run["b1_atlas"]] if run.get("b1_atlas") else [])]  # B1a right after B1
    floors = [b["floor"] | {"timestamp": when(b, run)} for b in b1 if "floor" in b]
    main[at : at + 1] = [*b1, *floors]  # then B1f at each scale
    for b, part in [*((b, run) for b in main), *extra]:
        base = b["baseline"] or {"seconds": "", "peak_rss_mib": ""}
        cells = [b["id"], b["name"], base["seconds"], b["ours"]["seconds"], ratio_cell(b, "seconds")]
        cells += [base["peak_rss_mib"], b["ours"]["peak_rss_mib"], ratio_cell(b, "peak_rss_mib")]
        cells += [AIMS[b["id"]], when(b, part)[:8]]
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    m, r = run["machine"], run["registry"]
    return f"""# Benchmarks

`make bench` at `demo_scale: bench` ({run["cells"]:,} cells in the latest collection; query
`bench/blood-immune.yaml`), for B1 also at `small` and (B1a) `atlas` scale, and for B4 at
`demo_scale: registry` (query `bench/registry-all.yaml`), on {m["cpus"]} CPUs, {m["memory_gib"]} GiB,
Python {m["python"]}. Every figure comes from runs made side by side in one invocation (the whole run's or,
re-run alone with `--only`, its own: the `measured` column); ratios are ours / baseline (lower is
better). {cache_sentence(m)}
Wall time in seconds, peak memory as the RSS of the largest process in MiB.
Raw results, every row's latest: `bench/results/{saved}.json`. Reproduce: `make bench`.

| id | what | baseline s | ours s | ratio | baseline MiB | ours MiB | ratio | aim | measured |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

B4 in detail ({r["artifacts"]:,} artifacts in {r["shards"]} shard jobs, `--cores 2`):

| step | seconds | per artifact | peak MiB |
| --- | --- | --- | --- |
{chr(10).join(registry_rows(r))}

B6, the training loaders (`cellquery/query/training.py`): one shuffled epoch over the result, one process
each, after a one-batch warm-up timed apart (opening; on the census route numba compiling tiledbsoma-ml):

| loader | cells (batches x size) | warm-up s | cells/s | peak MiB | published samples/s |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(loader_rows(run["loaders"]))}
{scales_table(run)}{startup_table(run)}{builds_table(run.get("builds"))}\
{object_storage_table(run.get("object_storage"))}{census_scale_table(run.get("census_scale"))}\
{validation_table(run.get("validation_catches"))}"""


def ratio_cell(row: dict, key: str) -> str:
    """A ratio, with the spread of its pairs when it is a median of several."""
    ratio, spread = row[f"ratio_{key}"], row.get(f"spread_{key}")
    if ratio is None:
        return ""
    return f"{ratio} ({spread[0]}-{spread[1]})" if spread else str(ratio)


def b1_by_scale(run: dict) -> list[dict]:
    """B1's figures at each scale measured (small, bench, atlas), from `pipeline_vs_loop`."""
    bench = [b for b in run["benchmarks"] if b["id"] == "B1" and "scale" in b]
    return [b for b in (run.get("b1_small"), *bench, run.get("b1_atlas")) if b]


def scales_table(run: dict) -> str:
    """B1 at each scale: the loop's time and memory grow with the files it loads, the pipeline's memory
    should not (B1a's aims)."""
    rows = b1_by_scale(run)
    if not rows:
        return ""
    lines = [
        "",
        "B1 at each scale (`pipeline_vs_loop`: the pipeline up to the registered result vs the seed guide's",
        "loop over the same matched artifacts; at atlas scale it is B1a):",
        "",
        "| scale | query | cells in the result | datasets matched (GB) | loop s | loop MiB | pipeline s | "
        "pipeline MiB | s ratio | MiB ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in rows:
        cells = [
            b["scale"],
            f"`{b['query']}`",
            f"{b['cells']:,}",
            f"{b['datasets']} ({b['matched_gb']})",
            b["baseline"]["seconds"],
            b["baseline"]["peak_rss_mib"],
            b["ours"]["seconds"],
            b["ours"]["peak_rss_mib"],
            b["ratio_seconds"],
            b["ratio_peak_rss_mib"],
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if len(rows) > 1:
        plot_scales(rows, SCALES_PLOT)
        lines += ["", f"![B1 at each scale]({SCALES_PLOT.relative_to(REPO)})"]
    return "\n".join(lines) + "\n"


def cache_sentence(machine_figures: dict) -> str:
    if machine_figures.get("cold_page_cache"):
        sides = "B1, B1a, B1f, B2, B3, B9, B12 and B13"
        return f"Each side of {sides} starts from an empty page cache (files read from\ndisk)."
    return "The page cache was not emptied between sides (not root): a side may read what one before it read."


def startup_table(run: dict) -> str:
    return startup.table(run["startup"]) if "startup" in run else ""


def object_storage_table(b9: dict | None) -> str:
    """B9's table: per query, each way's time, memory and bytes, with its ratios to cache and stream's
    better time and to the seed's bytes."""
    if not b9:
        return ""
    f = b9["file"]
    lines = [
        "",
        f"B9, the largest file over S3 (`{f['key']}`, {f['size'] / 1e6:,.0f} MB, {f['n_obs']:,} cells;",
        f"the bench demo with `demo_storage: s3`, {b9['timestamp']}): one process per way, bytes counted by",
        "a proxy on loopback; `census`: the census route's slice of the same cells from the store on S3",
        "(what a full validation reads besides the h5ad route's bytes). Each figure the median of",
        "three sweeps over every way (lowest-highest seconds in brackets).",
        f"Aims: `auto` within {AUTO_AIM}x of the better of cache and stream; on the 5% query at most",
        f"{SEED_BYTES_AIM}x the seed's bytes.",
        "",
        "| query (cells) | way | ran | s | peak MiB | MB moved | s / best of cache, stream | MB / seed's |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for query, spec in b9["queries"].items():
        rows = {row["way"]: row for row in b9["rows"] if row["query"] == query}
        best = min(rows["cache"]["seconds"], rows["stream"]["seconds"])
        for way, row in rows.items():
            cells = [
                f"{query} ({spec['share']:.1%})",
                way,
                row["chosen"],
                seconds_with_spread(row),
                row["peak_rss_mib"],
                row["mb_moved"],
                round(row["seconds"] / best, 2),
                round(row["mb_moved"] / max(rows["seed"]["mb_moved"], 1e-9), 2),
            ]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def seconds_with_spread(row: dict) -> str:
    """A B9 row's seconds, with their spread when they are a median of several runs."""
    spread = row.get("spread_seconds")
    return f"{row['seconds']} ({spread[0]}-{spread[1]})" if spread else str(row["seconds"])


def registry_rows(r: dict) -> list[str]:
    planned = round(r["resolve"]["seconds"] + r["dag"]["seconds"], 2)
    steps = [
        ("resolve (`--until resolve`, clean results directory)", r["resolve"], ""),
        ("DAG (`--dry-run` after resolve: every shard job planned)", r["dag"], ""),
        ("resolve plus DAG", {"seconds": planned, "peak_rss_mib": ""}, r["resolve_and_dag_per_artifact"]),
        (
            "the whole run (fetch, slice, census, assemble, register)",
            r["whole_run"],
            r["whole_run_per_artifact"],
        ),
    ]
    return [f"| {name} | {m['seconds']} | {per} | {m['peak_rss_mib']} |" for name, m, per in steps]


def registry_row(registry: dict) -> dict:
    """B4 in the main table: resolve plus DAG, no baseline."""
    planned = {
        "seconds": round(registry["resolve"]["seconds"] + registry["dag"]["seconds"], 2),
        "peak_rss_mib": max(registry["resolve"]["peak_rss_mib"], registry["dag"]["peak_rss_mib"]),
    }
    name = f"resolve plus DAG for a query matching {registry['artifacts']:,} artifacts"
    return compared("B4", name, None, planned)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--project", type=Path, default=REPO)
    parser.add_argument("--only", choices=list(ALONE), help="run it alone; the others keep their last run")
    args = parser.parse_args()
    project = args.project.resolve()
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.only:
        key, measure = ALONE[args.only]
        found = measure(project)
        now = {"timestamp": timestamp}
        stamped = [now | row for row in found] if isinstance(found, list) else found | now
        run = json.loads(latest_results().read_text()) | {key: stamped}
    else:
        run = whole_run(project, timestamp)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{timestamp}.json").write_text(json.dumps(run, indent=2) + "\n")
    report = render(run, timestamp)
    write_report(report)
    print(report)


def s3_bench(measure):
    """A measurement over the S3 bench demo, built first when absent."""

    def measured_over_s3(project: Path):
        ensure_demo(project, "bench", storage="s3")
        return measure(project)

    return measured_over_s3


ALONE = {  # what `--only` runs: (its key in the results, the measurement)
    "B1": ("benchmarks", bench_scale),
    "B1a": ("b1_atlas", b1_at("atlas")),
    "B1-small": ("b1_small", b1_at("small")),
    "B8": ("builds", s3_bench(dataset_builds)),
    "B9": ("object_storage", s3_bench(object_storage)),
    "B11": ("rejections", rejections),
    "B12": ("census_scale", census_scale),
    "B14": ("validation_catches", validation_catches),
    "B13": ("atlas_store", atlas_store),
}


def latest_results() -> Path:
    return max(RESULTS.glob("*.json"))


def whole_run(project: Path, timestamp: str) -> dict:
    ensure_demo(project, "bench", storage="s3")
    ensure_demo(project, "bench")
    ensure_demo(project, "registry")
    ensure_demo(project, "small")
    ensure_demo(project, "atlas")
    summary = json.loads((project / ".demo" / "bench" / "summary.json").read_text())
    rows = benchmarks(project)
    startups = startup.startup_seconds(project / QueryFiles(QUERY.stem).logs)
    b1_small = pipeline_vs_loop(project, "small", B1_QUERIES["small"])
    b1_atlas = pipeline_vs_loop(project, "atlas", B1_QUERIES["atlas"], "B1a")
    registry = registry_scale(project)
    storage = object_storage(project)
    builds = dataset_builds(project)
    return {
        "timestamp": timestamp,
        "machine": machine(),
        "cells": summary["collections"][-1]["cells"],
        "benchmarks": [*rows[:3], registry_row(registry), *rows[3:]],
        "registry": registry,
        "startup": {"kinds": startups, "timestamp": timestamp},
        "loaders": loaders(project),
        "object_storage": storage | {"timestamp": timestamp},
        "builds": builds | {"timestamp": timestamp},
        "rejections": rejections(project) | {"timestamp": timestamp},
        "b1_small": b1_small | {"timestamp": timestamp},
        "b1_atlas": b1_atlas | {"timestamp": timestamp},
        "atlas_store": atlas_store(project) | {"timestamp": timestamp},
        "census_scale": census_scale(project) | {"timestamp": timestamp},
        "validation_catches": validation_catches(project) | {"timestamp": timestamp},
    }


def write_report(table: str) -> None:
    """Replace the generated part of BENCHMARKS.md; the written analysis after it (## sections) stays."""
    report = REPO / "BENCHMARKS.md"
    previous = report.read_text() if report.exists() else ""
    analysis = previous[previous.index("\n## ") :] if "\n## " in previous else ""
    report.write_text(table + analysis)


if __name__ == "__main__":
    main()
