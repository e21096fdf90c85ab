"""Faults from outside the workflow: SIGTERM to the whole run in every stage (what SLURM sends at a time
limit), a full disk under the slices and under the result, the object store unreachable. Each stops the run
with one line (or, for SIGTERM, one line per stopped job), keeps nothing half-written, and the next run
completes."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from contextlib import contextmanager

import pandas as pd
import pytest
import yaml
from conftest import REPO, registry_state, slices_of, snakemake
from test_crashes import assert_outputs_whole

from bench.proxy import CountingProxy
from cellquery.workflow.faults import STAGES

T_CELLS = REPO / "config" / "queries" / "t-cells.yaml"
RULES = {"slice": "shard", "export": "export_zarr"}  # a stage's rule, where the names differ


def spec_named(folder, name: str, **output):
    """The t-cells spec under a fresh name (and output key), with more `output` settings."""
    data = yaml.safe_load(T_CELLS.read_text())
    data["name"] = name
    data["output"] |= {"key": f"cellquery/{name}.h5ad", **output}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_registered_once(demo, results, name: str) -> None:
    """Exactly one version under the query's key in the target, the one its receipt names; the target
    audited clean."""
    key = f"cellquery/{name}.h5ad"
    receipt = json.loads((results / "receipt.json").read_text())
    state = registry_state(demo, [key])
    assert (state["versions"], state["problems"]) == ({key: [receipt["artifact_uid"]]}, [])


def assert_completed_once(demo, results, slices, name: str) -> None:
    """Outputs whole, the target audited clean, the result registered once."""
    assert_outputs_whole(results, slices)
    assert_registered_once(demo, results, name)


def one_line(run, *words: str) -> str:
    """The run's only `cellquery:` line (it must hold `words`); no traceback reached the terminal."""
    output = run.stdout + run.stderr
    lines = [line for line in output.splitlines() if line.startswith("cellquery: ")]
    assert len(lines) == 1 and all(word in lines[0] for word in words), output[-3000:]
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture(scope="module")
def built(demo, tmp_path_factory):
    """A t-cells query (with its zarr export) built up to its registration: each stage's test runs that
    stage again (the registration: once)."""
    name = f"sigterm-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path_factory.mktemp("sigterm"), name, formats=["zarr"])
    snakemake(demo.project, "--config", f"query={spec}", "--until", "export_zarr")
    return spec, name


def stage_command(stage: str, spec, name: str) -> list[str]:
    """The command that runs `stage` of the built query again, and nothing after it."""
    if stage == "register":  # registered by no run yet: its receipt, as the target, is made once
        return [f"results/{name}/receipt.json", "--config", f"query={spec}"]
    rule = RULES.get(stage, stage)
    return ["-R", rule, "--until", rule, "--config", f"query={spec}"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "signal"), [*((stage, "TERM") for stage in STAGES), ("census", "INT"), ("assemble", "INT")]
)
def test_a_stopping_signal_in_each_stage_keeps_nothing_half_written_and_the_rerun_completes(
    demo, built, stage, signal
):
    """SIGTERM (a scheduler) in every stage, SIGINT (Ctrl-C, to the whole process group) in two: one line
    per stopped job, no traceback."""
    spec, name = built
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    if stage == "slice":
        shutil.rmtree(slices, ignore_errors=True)  # current slices are kept, not made: made afresh here
    command = stage_command(stage, spec, name)
    stopped = snakemake(
        demo.project, *command, check=False, env={"CELLQUERY_KILL_AT": stage, "CELLQUERY_KILL_SIGNAL": signal}
    )
    assert stopped.returncode != 0
    assert f"stopped by SIG{signal}" in stopped.stderr, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert not list(results.rglob(".tmp-*")) and not list(slices.glob(".tmp-*"))
    snakemake(demo.project, *command)
    assert_outputs_whole(results, slices)
    assert registry_state(demo, [])["problems"] == []
    if stage in ("register", "describe"):
        assert_registered_once(demo, results, name)


@contextmanager
def small_disk(path, size: str):
    """A tmpfs of `size` mounted at `path` (needs root, as tests/test_fetch.py), unmounted on leaving."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow
def test_a_full_disk_under_the_slices_stops_with_one_line_and_the_rerun_completes(demo, tmp_path):
    name = f"full-slices-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    shutil.rmtree(
        slices, ignore_errors=True
    )  # shared with other t-cells queries: made here, on the small disk
    with small_disk(slices, "16k"):
        full = snakemake(demo.project, "--config", f"query={spec}", check=False)
        assert full.returncode != 0
        one_line(full, f"slices/{slices.name}/", ".h5ad: no space left on the disk")
        assert not [p for p in slices.iterdir() if not p.name.endswith(".lock")]  # no partial slice
    assert not (results / f"{name}.h5ad").exists()
    snakemake(demo.project, "--config", f"query={spec}")
    assert_completed_once(demo, results, slices, name)


@pytest.mark.slow
def test_a_full_disk_under_the_result_stops_with_one_line_and_the_rerun_completes(demo, built, tmp_path):
    name = f"full-result-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    census = (demo.project / "results" / built[1] / "census.h5ad").stat().st_size  # the same cells
    with small_disk(results, f"{census // 1024 + 256}k"):  # room for the census slice, not the result
        full = snakemake(demo.project, "--config", f"query={spec}", check=False)
        assert full.returncode != 0
        one_line(full, f"results/{name}/{name}.h5ad: no space left on the disk")
        assert not list(results.rglob(".tmp-*")) and not (results / f"{name}.h5ad").exists()
    snakemake(demo.project, "--config", f"query={spec}")
    assert_completed_once(demo, results, slices, name)


def through(proxy: CountingProxy, client: str) -> str:
    """The `--config` entry that sends one client's requests to the store through the proxy: TileDB's (the
    census store) as its endpoint, s3fs's (the downloads) as its HTTP proxy."""
    if client == "tiledb":
        return f"object_storage={{tiledb: {{vfs.s3.endpoint_override: '127.0.0.1:{proxy.port}'}}}}"
    return f"object_storage={{s3: {{config_kwargs: {{proxies: {{http: '{proxy.endpoint}'}}}}}}}}"


@contextmanager
def store_down(proxy: CountingProxy):
    """The store unreachable through the proxy (its port refuses connections), then back on that port."""
    proxy.close()
    try:
        yield
    finally:
        proxy.listen_again()


def assert_s3_completed_once(demo, name: str) -> None:
    results = demo.project / "results" / name
    assert_outputs_whole(results, demo.project / "slices")
    assert_registered_once(demo, results, name)


@pytest.fixture
def proxy(s3_demo):
    counting = CountingProxy(s3_demo.object_server.ensure_running().port)
    yield counting
    counting.close()


@pytest.mark.slow
def test_the_census_store_unreachable_at_the_spec_check_and_during_the_read_stops_with_one_line(
    s3_demo, proxy, tmp_path
):
    """Down before the run (Snakemake's own process checks the spec against it), then after `resolve` (the
    census job reads it); one query, so the store's two readers cost one build."""
    name = f"store-down-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    command = ["--config", f"query={spec}", "demo_storage=s3", "fetch=cache", through(proxy, "tiledb")]
    results, unreachable = s3_demo.project / "results" / name, f"at 127.0.0.1:{proxy.port} cannot be read"
    with store_down(proxy):
        check = snakemake(s3_demo.project, *command, check=False)
    assert check.returncode == 1 and not results.exists()  # stopped before any job
    one_line(check, f"{spec}: census store s3://", unreachable)
    snakemake(s3_demo.project, *command, "--until", "resolve")
    with store_down(proxy):
        read = snakemake(s3_demo.project, *command, check=False)
    assert read.returncode == 1
    one_line(read, "census store s3://", unreachable)
    assert not (results / "census.h5ad").exists() and not list(results.rglob(".tmp-*"))
    snakemake(s3_demo.project, *command)
    assert_s3_completed_once(s3_demo, name)


@pytest.mark.slow
def test_the_store_unreachable_during_a_download_stops_with_one_line(s3_demo, proxy, tmp_path):
    name = f"store-down-fetch-{uuid.uuid4().hex[:6]}"
    spec, cache = spec_named(tmp_path, name), tmp_path / "cache"  # nothing cached: every artifact downloaded
    shutil.rmtree(slices_of(s3_demo.project, spec), ignore_errors=True)  # current slices need no download
    command = ["--config", f"query={spec}", "demo_storage=s3", "fetch=cache", f"cache_dir={cache}"]
    command += [through(proxy, "s3"), "download_patience_s=3"]  # gives up after waits of 1 and 2 s
    snakemake(s3_demo.project, *command, "--until", "resolve")
    proxy.faults.down_after = 2**16  # the server goes away 64 KiB into a download
    down = snakemake(s3_demo.project, *command, check=False)
    assert down.returncode == 1
    one_line(
        down,
        "download of cellquery-demo-small/cell-census/",
        "failed 3 times in a row over 3 s",
        f'proxy URL: "{proxy.endpoint}"',
    )
    results = s3_demo.project / "results" / name
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    sizes = dict(manifest[["dataset_id", "size"]].itertuples(index=False))  # copies keep the key's name
    for copy in cache.rglob("*.h5ad"):  # downloads cut short stay private .part files
        assert copy.stat().st_size == sizes[copy.stem]
    assert not list(results.rglob(".tmp-*")) and not (results / f"{name}.h5ad").exists()
    proxy.listen_again()
    snakemake(s3_demo.project, *command)
    assert_s3_completed_once(s3_demo, name)
