"""Several runs against one registry at once, on SQLite and on PostgreSQL: both queries register, nothing is
lost, and the same query started twice ends with exactly one new version.

The second run works in a second project directory that shares the first one's instance, as two users
sharing one registry do (one directory cannot host two runs: Snakemake locks it). They share the demo they
read and the target they register into.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from conftest import REPO, registry_state, run_config, snakemake

from cellquery.workflow.jobs import JOBS_LOCK

QUERIES = REPO / "config" / "queries"


def second_project(demo, tmp_path):
    project = tmp_path / "second-user"
    project.mkdir()
    (project / ".demo").symlink_to(demo.project / ".demo")
    (demo.project / ".cellquery").mkdir(exist_ok=True)
    (project / ".cellquery").symlink_to(demo.project / ".cellquery")  # the target too: one shared registry
    return project


def spec(tmp_path, query: str, name: str):
    """A shipped query under another name, and its own output key (the shipped query owns its key)."""
    path = tmp_path / f"{name}.yaml"
    data = yaml.safe_load((QUERIES / query).read_text())
    output = (data.get("output") or {}) | {"key": f"cellquery/{name}.h5ad"}
    path.write_text(yaml.safe_dump(data | {"name": name, "output": output}))
    return path


def run_at_once(demo, runs):
    """Start every (project, spec) run together; return their completed processes."""
    config = run_config(demo)

    def run(project_and_spec):
        project, path = project_and_spec
        return snakemake(project, "--config", f"query={path}", *config, check=False)

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        return list(pool.map(run, runs))


def receipt(project, name: str) -> dict:
    return json.loads((project / "results" / name / "receipt.json").read_text())


@pytest.mark.slow
def test_two_queries_at_once_both_register(instance, tmp_path):
    tag = uuid.uuid4().hex[:6]
    kidney, brain = f"kidney-{tag}", f"brain-{tag}"
    other = second_project(instance, tmp_path)
    runs = run_at_once(
        instance,
        [
            (instance.project, spec(tmp_path, "kidney-immune.yaml", kidney)),
            (other, spec(tmp_path, "brain-microglia.yaml", brain)),
        ],
    )
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-3000:] for r in runs]
    state = registry_state(instance, [f"cellquery/{kidney}.h5ad", f"cellquery/{brain}.h5ad"])
    assert state["versions"] == {
        f"cellquery/{kidney}.h5ad": [receipt(instance.project, kidney)["artifact_uid"]],
        f"cellquery/{brain}.h5ad": [receipt(other, brain)["artifact_uid"]],
    }
    assert state["problems"] == []


@pytest.mark.slow
def test_the_same_query_started_twice_at_once_makes_one_version(instance, tmp_path):
    name = f"twice-{uuid.uuid4().hex[:6]}"
    path = spec(tmp_path, "kidney-immune.yaml", name)
    other = second_project(instance, tmp_path)
    runs = run_at_once(instance, [(instance.project, path), (other, path)])
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-3000:] for r in runs]
    first, second = receipt(instance.project, name), receipt(other, name)
    assert first["artifact_uid"] == second["artifact_uid"]
    assert sorted([first["reused"], second["reused"]]) == [False, True]  # one registered, one found it
    state = registry_state(instance, [f"cellquery/{name}.h5ad"])
    assert state["versions"] == {f"cellquery/{name}.h5ad": [first["artifact_uid"]]}
    assert state["problems"] == []


def test_a_run_refuses_to_start_while_jobs_of_a_killed_run_are_at_work(demo, tmp_path):
    """A job holds its share of `.snakemake/cellquery-jobs.lock` while it works; jobs that outlived their
    killed run (SIGKILL to Snakemake alone) keep it, and a new run, finding no run but their lock, refuses in
    one line naming them instead of removing the locks and starting the same work."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_JOBS_LOCK, str(demo.project / JOBS_LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        path = spec(tmp_path, "t-cells.yaml", f"orphans-{uuid.uuid4().hex[:6]}")
        refused = snakemake(demo.project, "--config", f"query={path}", check=False)
        lines = [line for line in refused.stderr.splitlines() if line.startswith("cellquery:")]
        assert refused.returncode == 1 and lines == [
            f"cellquery: jobs of a run that was killed are still at work here (processes {holder.pid}): wait "
            "until they end, or stop them, then run again"
        ], refused.stderr[-2000:]
        assert "Building DAG" not in refused.stdout + refused.stderr
    finally:
        holder.kill()
        holder.wait()
    snakemake(demo.project, "--config", f"query={path}", "--until", "resolve")  # the lock gone, it runs


HOLD_A_JOBS_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_SH)
print("holding", flush=True)
time.sleep(600)
"""
