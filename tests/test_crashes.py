"""Crashes and corruption: the workflow killed (SIGKILL to Snakemake and every job) while slicing,
assembling and registering; damaged artifact files. The next run completes, every output is whole, the
registry holds no orphan, and a damaged file never reaches a result."""

from __future__ import annotations

import json
import shutil
import uuid

import anndata as ad
import pytest
import yaml
from conftest import REPO, slices_of, snakemake

from cellquery.audit import registry_problems
from cellquery.faults import POINTS

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
def test_a_killed_run_is_completed_by_the_next_one(demo, ln, tmp_path, point):
    name = f"crash-{point}-{uuid.uuid4().hex[:6]}"  # fresh in a reused project too
    spec = spec_named(tmp_path, name)
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    shutil.rmtree(slices, ignore_errors=True)  # shared with other kidney queries: made afresh here
    killed = snakemake(
        demo.project, "--config", f"query={spec}", check=False, env={"CELLQUERY_KILL_AT": point}
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert what_the_kill_left(results, slices, name, point)
    if point == "register":  # the file was stored, its record never committed
        assert any("has no artifact record" in problem for problem in registry_problems(ln))

    snakemake(demo.project, "--config", f"query={spec}")
    assert_outputs_whole(results, slices)
    assert registry_problems(ln) == []
    versions = ln.Artifact.filter(key=f"cellquery/{name}.h5ad")
    receipt = json.loads((results / "receipt.json").read_text())
    assert versions.count() == 1 and versions.first().uid == receipt["artifact_uid"]
    collections = ln.Collection.filter(key=f"cellquery/{name}")  # the result's, none left by the killed run
    assert collections.count() == 1 and collections.first().uid == receipt["collection_uid"]
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
    assert not (results / f"{name}.h5ad").exists() and not (slices / f"{artifact.uid}.h5ad").exists()
    assert not ln.Artifact.filter(key=f"cellquery/{name}.h5ad").exists()
