"""Services failing under a running build: the PostgreSQL server restarted while a result registers; a SLURM
job cancelled by the scheduler mid-shard. The run completes or stops naming what failed, the rerun completes,
and the registry holds exactly one version under the key and nothing orphaned.

Real services (`.ci/services` starts them); in CI (CI=true) a missing one fails the test. The restart is
timed by a lock the test holds, the cancel by the shard's log appearing: no sleeps decide the outcome.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
import yaml
from conftest import BIN, REPO, clean_env, require_service, slices_of, snakemake
from test_cluster import slurm_missing

from cellquery.registration import LOCK_KEY

KIDNEY = REPO / "config" / "queries" / "kidney-immune.yaml"
pytestmark = pytest.mark.timeout(1200, func_only=True)  # the session's PostgreSQL demo is timed apart

# What the test holds so that the register job waits at a known point: before its transaction (the
# instance-wide registration lock), or inside it (inserting the new version's record).
HOLDS = {
    "registration lock": (f"SELECT pg_advisory_lock({LOCK_KEY})", "locktype = 'advisory'"),
    "artifact insert": (
        "BEGIN; LOCK TABLE lamindb_artifact IN SHARE MODE",
        "relation = 'lamindb_artifact'::regclass",
    ),
}


def spec_named(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(KIDNEY.read_text()) | {"name": name}))
    return path


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """`conftest.snakemake`, started in the background."""
    command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return subprocess.Popen(
        [*command, "--cores", "2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=workdir,
        start_new_session=True,
    )


def wait_until(condition, run: subprocess.Popen, what: str) -> None:
    """Poll `condition` while `run` is alive; the run ending first fails the test."""
    while not condition():
        if run.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{run.stderr.read()[-4000:]}")
        time.sleep(0.2)


@contextmanager
def holding(db_url: str, statement: str) -> Iterator[None]:
    """A session of the test's own holding a lock (it dies with the server's restart)."""
    connection = psycopg2.connect(db_url)
    connection.autocommit = True
    connection.cursor().execute(statement)
    try:
        yield
    finally:
        connection.close()


def someone_waits(db_url: str, where: str) -> bool:
    with psycopg2.connect(db_url) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pg_locks WHERE NOT granted AND {where}")
        return cursor.fetchone()[0] > 0


def registry_state(demo, key: str) -> dict:
    """The versions under `key` and the audit's problems, read by a process connected to `demo`."""
    code = (
        "import json, os\n"
        "from cellquery.lamin import connect\n"
        "from cellquery.audit import registry_problems\n"
        "ln = connect(dict(os.environ))\n"
        f"versions = list(ln.Artifact.filter(key={key!r}).values_list('uid', flat=True))\n"
        "print(json.dumps({'versions': versions, 'problems': registry_problems(ln)}))\n"
    )
    found = subprocess.run(
        [str(BIN / "python"), "-c", code],
        env=clean_env(**demo.env()),
        cwd=demo.project,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(found.stdout.strip().splitlines()[-1])


def cellquery_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("cellquery:")]


@pytest.mark.slow
@pytest.mark.parametrize("waiting_at", HOLDS)
def test_postgresql_restarted_while_registering(pg_demo, tmp_path, waiting_at):
    name = f"pg-restart-{uuid.uuid4().hex[:6]}"
    config = ["--config", f"query={spec_named(tmp_path, name)}", f"demo_db_url={pg_demo.db_url}"]
    statement, where = HOLDS[waiting_at]
    with holding(pg_demo.db_url, statement):  # no step before the registration takes or waits for it
        run = start_snakemake(pg_demo.project, *config)
        wait_until(lambda: someone_waits(pg_demo.db_url, where), run, f"waiting at the {waiting_at}")
        subprocess.run(["pg_ctlcluster", "15", "main", "restart"], check=True)
    stdout, stderr = run.communicate()
    output = stdout + stderr
    assert "Traceback" not in output
    if run.returncode != 0:  # stopped: one line, and the rerun registers
        assert len(cellquery_lines(output)) == 1, output[-4000:]
        snakemake(pg_demo.project, *config)
    state = registry_state(pg_demo, f"cellquery/{name}.h5ad")
    receipt = json.loads((pg_demo.project / "results" / name / "receipt.json").read_text())
    assert state == {"versions": [receipt["artifact_uid"]], "problems": []}


def slurm_job_of(project: Path, rule: str) -> str:
    """The SLURM job id of a job of `rule`: the name of the log file the plugin asked SLURM for."""
    (log,) = (project / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob("*.log")
    return log.stem


@pytest.mark.slow
def test_a_slurm_job_cancelled_mid_shard_is_named_and_the_rerun_completes(pg_demo, tmp_path):
    require_service(slurm_missing())
    name = f"scancel-{uuid.uuid4().hex[:6]}"
    spec = spec_named(tmp_path, name)
    shutil.rmtree(slices_of(pg_demo.project, spec), ignore_errors=True)  # the shard has work to do
    shutil.rmtree(pg_demo.project / ".snakemake" / "slurm_logs" / "rule_shard", ignore_errors=True)
    args = [f"results/{name}/receipt.json", "--profile", str(REPO / "profiles" / "slurm")]
    args += ["--config", f"query={spec}", f"demo_db_url={pg_demo.db_url}"]
    run = start_snakemake(pg_demo.project, *args)
    wait_until((pg_demo.project / "logs" / name / "shard-0.log").exists, run, "the shard started")
    job_id = slurm_job_of(pg_demo.project, "shard")
    subprocess.run(["scancel", job_id], check=True)
    stdout, stderr = run.communicate()
    output = stdout + stderr
    assert run.returncode == 1 and "Error in rule shard:" in output
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in output

    snakemake(pg_demo.project, *args)
    validation = json.loads((pg_demo.project / "results" / name / "validation.json").read_text())
    assert validation["status"] == "passed"  # the h5ad route (the shards) equals the census route
    state = registry_state(pg_demo, f"cellquery/{name}.h5ad")
    receipt = json.loads((pg_demo.project / "results" / name / "receipt.json").read_text())
    assert state == {"versions": [receipt["artifact_uid"]], "problems": []}
