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

import pytest
import yaml
from conftest import REPO, slices_of, snakemake
from test_crashes import assert_outputs_whole

from cellquery.audit import registry_problems
from cellquery.faults import STAGES

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


def assert_completed_once(ln, results, slices, name: str) -> None:
    """Outputs whole, the registry audited clean, exactly one version under the key: the receipt's."""
    assert_outputs_whole(results, slices)
    assert registry_problems(ln) == []
    versions = ln.Artifact.filter(key=f"cellquery/{name}.h5ad")
    receipt = json.loads((results / "receipt.json").read_text())
    assert versions.count() == 1 and versions.first().uid == receipt["artifact_uid"]


def one_line(run, *words: str) -> str:
    """The run's only `cellquery:` line (it must hold `words`); no traceback reached the terminal."""
    output = run.stdout + run.stderr
    lines = [line for line in output.splitlines() if line.startswith("cellquery: ")]
    assert len(lines) == 1 and all(word in lines[0] for word in words), output[-3000:]
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture(scope="module")
def built(demo, tmp_path_factory):
    """A t-cells query (with its zarr export) built to its report: each stage's test reruns it from there."""
    name = f"sigterm-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path_factory.mktemp("sigterm"), name, formats=["zarr"])
    snakemake(demo.project, "--config", f"query={spec}")
    return spec, name


def stage_run(stage: str, built, folder) -> tuple:
    """The query and command that reach `stage`: the built query rerun from the stage's rule; for register
    a new query (a rerun registers nothing new: it finds the same content under its key)."""
    if stage == "register":
        name = f"sigterm-register-{uuid.uuid4().hex[:6]}"
        spec = spec_named(folder, name, formats=["zarr"])
        return spec, name, ["--config", f"query={spec}"]
    spec, name = built
    return spec, name, ["-R", RULES.get(stage, stage), "--config", f"query={spec}"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_sigterm_in_each_stage_keeps_nothing_half_written_and_the_rerun_completes(
    demo, ln, built, tmp_path, stage
):
    spec, name, command = stage_run(stage, built, tmp_path)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    if stage == "slice":
        shutil.rmtree(slices, ignore_errors=True)  # shared with other t-cells queries: made afresh here
    stopped = snakemake(
        demo.project, *command, check=False, env={"CELLQUERY_KILL_AT": stage, "CELLQUERY_KILL_SIGNAL": "TERM"}
    )
    assert stopped.returncode != 0
    assert "stopped by SIGTERM" in stopped.stderr, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert not list(results.rglob(".tmp-*")) and not list(slices.glob(".tmp-*"))
    snakemake(demo.project, *command)
    assert_completed_once(ln, results, slices, name)


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
def test_a_full_disk_under_the_slices_stops_with_one_line_and_the_rerun_completes(demo, ln, tmp_path):
    name = f"full-slices-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    shutil.rmtree(
        slices, ignore_errors=True
    )  # shared with other t-cells queries: made here, on the small disk
    with small_disk(slices, "16k"):
        full = snakemake(demo.project, "--config", f"query={spec}", check=False)
        assert full.returncode != 0
        one_line(full, f"{slices}/", ".h5ad: no space left on the disk")
        assert not [p for p in slices.iterdir() if not p.name.endswith(".lock")]  # no partial slice
    assert not (results / f"{name}.h5ad").exists()
    snakemake(demo.project, "--config", f"query={spec}")
    assert_completed_once(ln, results, slices, name)


@pytest.mark.slow
def test_a_full_disk_under_the_result_stops_with_one_line_and_the_rerun_completes(demo, ln, tmp_path):
    name = f"full-result-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    snakemake(demo.project, "--config", f"query={spec}", "--until", "census")
    written = tmp_path / "written"
    shutil.copytree(results, written)
    used = sum(-(-p.stat().st_size // 4096) * 4096 for p in written.rglob("*") if p.is_file())
    with small_disk(results, f"{used // 1024 + 16}k"):  # room for what the run wrote, not for the result
        shutil.copytree(written, results, dirs_exist_ok=True, copy_function=shutil.copy2)
        full = snakemake(demo.project, "--config", f"query={spec}", check=False)
        assert full.returncode != 0
        one_line(full, f"{results}/{name}.h5ad: no space left on the disk")
        assert not list(results.rglob(".tmp-*")) and not (results / f"{name}.h5ad").exists()
    snakemake(demo.project, "--config", f"query={spec}")
    assert_completed_once(ln, results, slices, name)
