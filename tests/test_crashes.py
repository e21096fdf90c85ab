"""Crashes and corruption: the workflow killed (SIGKILL to Snakemake and every job) while slicing,
assembling and registering; damaged artifact files; an artifact published with repeated join keys. The next
run completes, every output is whole, the registry holds no orphan, and a damaged file never reaches a
result."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import anndata as ad
import h5py
import pytest
import yaml
from conftest import REPO, clean_env, lamin_hash, registry_state, slices_of, snakemake, target_of

from cellquery.cellxgene.joinkey import dataset_label
from cellquery.files import h5ad
from cellquery.files.layout import slice_content
from cellquery.query.runfiles import criteria_of, read_manifest, read_query
from cellquery.spec.criteria import obs_mask
from cellquery.workflow.faults import POINTS

KIDNEY = REPO / "config" / "queries" / "kidney-immune.yaml"


def spec_named(tmp_path, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(KIDNEY.read_text()) | {"name": name}))
    return path


def what_the_kill_left(results, slices, name: str, point: str) -> list:
    """Evidence that the run died inside the step: its unfinished temporaries or registration."""
    return {
        "slice": list(slices.glob(".tmp-*")),
        "assemble": list(results.glob(f".tmp-*-{name}.h5ad")),
        "register": list(results.glob(".register-intent.json")),
    }[point]


def assert_outputs_whole(results, slices) -> None:
    assert not list(results.rglob(".tmp-*")) and not (results / ".register-intent.json").exists()
    assert not list(slices.glob(".tmp-*"))
    for path in [*results.rglob("*.h5ad"), *slices.glob("*.h5ad")]:
        ad.read_h5ad(path, backed="r").file.close()
    for path in results.rglob("*.json"):
        json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_killed_run_is_completed_by_the_next_one(demo, tmp_path, point):
    name = f"crash-{point}-{uuid.uuid4().hex[:6]}"  # fresh in a reused project too
    spec = spec_named(tmp_path, name)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    shutil.rmtree(slices, ignore_errors=True)  # shared with other kidney queries: made afresh here
    killed = snakemake(
        demo.project, "--config", f"query={spec}", check=False, env={"CELLQUERY_KILL_AT": point}
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert what_the_kill_left(results, slices, name, point)
    key = f"cellquery/{name}.h5ad"
    if point == "register":  # the file was stored, its record never committed
        problems = registry_state(demo, [key])["problems"]
        assert any("has no artifact record" in problem for problem in problems)

    snakemake(demo.project, "--config", f"query={spec}")
    assert_outputs_whole(results, slices)
    receipt = json.loads((results / "receipt.json").read_text())
    # the result's version and collection in the target, none left by the killed run
    assert registry_state(demo, [key]) == {
        "versions": {key: [receipt["artifact_uid"]]},
        "collections": {key: [receipt["collection_uid"]]},
        "problems": [],
    }
    result = ad.read_h5ad(results / f"{name}.h5ad")
    assert result.n_obs == receipt["n_obs"] > 0


def damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # flipped bytes in the middle of the counts
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
        path.write_bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_artifact_file_stops_the_run_naming_it(demo, ln, tmp_path, how):
    name = f"damaged-{how}-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    slices = slices_of(demo.project, spec)
    shutil.rmtree(slices, ignore_errors=True)  # shared with other kidney queries: the slice must be made
    snakemake(demo.project, "--config", f"query={spec}", "--until", "resolve")
    results = demo.project / "results" / name
    first = (results / "manifest.tsv").read_text().splitlines()[1].split("\t")[0]
    artifact = ln.Artifact.get(uid=first)
    stored = artifact.path
    pristine = tmp_path / "pristine.h5ad"
    shutil.copy2(stored, pristine)
    try:
        damage(stored, how)
        result = snakemake(demo.project, "--config", f"query={spec}", check=False)
    finally:
        shutil.copy2(pristine, stored)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"cellquery: artifact {artifact.uid} ({artifact.key})" in output
    assert "does not match its registry size and hash" in output
    (row,) = [
        row for row in read_manifest(results / "manifest.tsv").to_dict("records") if row["uid"] == first
    ]
    assert not (results / f"{name}.h5ad").exists() and not (slices / f"{slice_content(row)}.h5ad").exists()
    key = f"cellquery/{name}.h5ad"
    assert registry_state(demo, [key])["versions"] == {key: []}


def repeat_join_keys(path) -> None:
    """Every odd cell takes the join key of the cell before it (a writer's mistake, cellxgene-census#1385)."""
    with h5py.File(path, "r+") as f:
        joinids = f["obs/observation_joinid"][:]
        joinids[1::2] = joinids[:-1:2]
        f["obs/observation_joinid"][:] = joinids


@pytest.mark.slow
def test_an_artifact_with_repeated_join_keys_stops_the_run_naming_its_dataset(demo, ln, tmp_path):
    """The artifact published (and registered: its hash is the broken file's) with repeated join keys: the
    shard stops with one line naming the dataset; no slice, no result, nothing registered."""
    name = f"repeated-joinids-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    snakemake(demo.project, "--config", f"query={spec}", "--until", "resolve")
    entry = read_manifest(results / "manifest.tsv").query("selected_cells > 1").iloc[0]
    artifact = ln.Artifact.get(uid=entry["uid"])
    stored, pristine = artifact.path, tmp_path / "pristine.h5ad"
    shutil.copy2(stored, pristine)
    try:
        repeat_join_keys(stored)
        ln.Artifact.filter(uid=artifact.uid).update(hash=lamin_hash(stored), size=stored.stat().st_size)
        run = snakemake(demo.project, "-R", "resolve", "--config", f"query={spec}", check=False)
        obs = h5ad.read_frame(stored, "obs")
    finally:
        shutil.copy2(pristine, stored)
        ln.Artifact.filter(uid=artifact.uid).update(hash=artifact.hash, size=artifact.size)
    selected = obs.loc[obs_mask(obs, criteria_of(read_query(results / "query.json"))), "observation_joinid"]
    counts = selected.value_counts()
    repeated = counts[counts > 1]
    label = dataset_label(entry["dataset_id"], entry["title"], entry["key"])
    values = "values" if len(repeated) > 1 else "value"
    output = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in output
    assert [line for line in output.splitlines() if line.startswith("cellquery: ")] == [
        f"cellquery: {label}: in the h5ad route, observation_joinid repeats: {len(repeated)} {values} held "
        f"by {repeated.sum()} of its {len(selected)} cells, e.g. {sorted(repeated.index)[:3]}; the routes "
        "are joined on it, one value per cell"
    ], output[-3000:]
    (broken,) = read_manifest(results / "manifest.tsv").query(f"uid == '{artifact.uid}'").to_dict("records")
    assert broken["hash"] != artifact.hash  # the run read the registry's record of the broken file
    assert not (slices / f"{slice_content(broken)}.h5ad").exists() and not list(slices.glob(".tmp-*"))
    assert not (results / f"{name}.h5ad").exists() and not list(results.rglob(".tmp-*"))
    assert not (results / "receipt.json").exists() and not (results / "validation.json").exists()
    key = f"cellquery/{name}.h5ad"
    assert registry_state(demo, [key]) == {"versions": {key: []}, "collections": {key: []}, "problems": []}


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["query.json", "manifest.tsv"])
def test_a_damaged_resolution_is_resolved_again_and_the_result_kept(demo, tmp_path, damaged):
    """A `resolve` output cut short (a full disk, an editor) stopped every later build at parse time with a
    traceback; now it is named in one warning line, resolved again, and the result's identical content is
    found registered: one version, the same."""
    name = f"damaged-resolution-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    results = demo.project / "results" / name
    snakemake(demo.project, "--config", f"query={spec}")
    before = json.loads((results / "receipt.json").read_text())
    damage(results / damaged, "truncated")
    rerun = snakemake(demo.project, "--config", f"query={spec}")
    warnings = [line for line in rerun.stderr.splitlines() if line.startswith("cellquery:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"cellquery: warning: results/{name}/{damaged}: ")
    assert warnings[0].endswith(": the query is resolved and built again"), warnings[0]
    assert_outputs_whole(results, slices_of(demo.project, spec))
    read_query(results / "query.json"), read_manifest(results / "manifest.tsv")  # sound again
    after = json.loads((results / "receipt.json").read_text())
    assert after["artifact_uid"] == before["artifact_uid"] and after["reused"]
    key = f"cellquery/{name}.h5ad"
    assert registry_state(demo, [key])["versions"] == {key: [before["artifact_uid"]]}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_slice_is_made_again_by_the_next_query_that_shares_it(demo, tmp_path, how):
    """A slice cut short or altered on disk (it used to fail every later run with a traceback, or pass its
    altered counts on to validation) is found by its seal and made again."""
    first, second = (f"slice-{how}-{n}-{uuid.uuid4().hex[:6]}" for n in (1, 2))
    spec = spec_named(tmp_path, first)
    snakemake(demo.project, "--config", f"query={spec}")
    slices = slices_of(demo.project, spec)
    row = read_manifest(demo.project / "results" / first / "manifest.tsv").iloc[0]
    damaged = slices / f"{slice_content(row)}.h5ad"
    damage(damaged, how)
    again = spec_named(tmp_path, second)  # the same cells under another name: it shares the slices
    snakemake(demo.project, "--config", f"query={again}")
    assert_outputs_whole(demo.project / "results" / second, slices)
    results = [ad.read_h5ad(demo.project / "results" / name / f"{name}.h5ad") for name in (first, second)]
    assert (results[0].X != results[1].X).nnz == 0 and results[0].n_obs == results[1].n_obs > 0
    log = (demo.project / "logs" / second / "shard-0.log").read_text()
    assert f"slice {damaged.relative_to(demo.project)} is not as it was written: made again" in log


def made_target(demo):
    """The demo project's target registry (made, when no test has made it yet)."""
    snakemake(demo.project, str(target_of(demo).receipt))
    return target_of(demo).embedded.sqlite_path


def refusals(run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("cellquery:")]


@pytest.mark.slow
def test_a_damaged_registry_database_is_named_before_any_job_and_by_the_audit(demo, tmp_path):
    """A target registry with a damaged page was registered into, and audited "whole"; now the spec check
    and the audit name it in one line each, and nothing runs."""
    name = f"damaged-registry-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    database = made_target(demo)
    whole = database.read_bytes()
    page = len(whole) // 4096 // 2 * 4096
    try:
        database.write_bytes(whole[:page] + bytes(range(256)) * 16 + whole[page + 4096 :])
        run = snakemake(demo.project, "--config", f"query={spec}", check=False)
        audit = subprocess.run(
            [sys.executable, "-m", "cellquery", "audit"],
            cwd=demo.project,
            env=clean_env(),
            capture_output=True,
            text=True,
        )
    finally:
        database.write_bytes(whole)
    damaged = f"cellquery: target: the registry database {database} is damaged (SQLite: "
    assert run.returncode == 1 and [line[: len(damaged)] for line in refusals(run)] == [damaged], run.stderr
    assert audit.returncode == 1 and audit.stderr.startswith(damaged) and "Traceback" not in audit.stderr
    assert not (demo.project / "results" / name).exists()


@pytest.mark.slow
def test_a_registry_database_locked_by_another_process_is_named_with_it(demo, tmp_path):
    """A target registry held locked (a `sqlite3` shell in a transaction) gave a minute of silence, then
    "a bug"; now the spec check names the database and the process holding it, in one line."""
    spec = spec_named(tmp_path, f"locked-registry-{uuid.uuid4().hex[:6]}")
    database = made_target(demo)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        run = snakemake(demo.project, "-n", "--config", f"query={spec}", check=False)
    finally:
        holder.close()
    command = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert run.returncode == 1 and refusals(run) == [
        f"cellquery: target: the registry database {database} is locked by process {os.getpid()} "
        f"({command}) and stayed locked 20 s: end that process's transaction (or the process), then run again"
    ], run.stderr
