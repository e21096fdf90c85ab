"""The PostgreSQL server restarted while a result registers: the registration completes on a new connection
(or, the server gone for good, stops with one line); the registry holds exactly one version under the key and
nothing orphaned. (A SLURM job cancelled mid-shard: tests/test_cluster.py.)

The server is the one `.ci/services` starts; in CI (CI=true) a missing one fails the test. The restart is
timed by a lock the test holds: no sleep decides the outcome.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg2
import pytest
import yaml
from conftest import (
    REPO,
    python_in,
    registry_state,
    run_config,
    snakemake,
    start_snakemake,
    target_db_url,
    wait_until,
)

from cellquery.query.registration import LOCK_KEY

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
    with closing(psycopg2.connect(db_url)) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pg_locks WHERE NOT granted AND {where}")
        return cursor.fetchone()[0] > 0


def cellquery_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("cellquery:")]


@pytest.mark.slow
@pytest.mark.parametrize("waiting_at", HOLDS)
def test_postgresql_restarted_while_registering(pg_demo, tmp_path, waiting_at):
    name = f"pg-restart-{uuid.uuid4().hex[:6]}"
    args = [
        f"results/{name}/receipt.json",
        "--config",
        f"query={spec_named(tmp_path, name)}",
        *run_config(pg_demo),
    ]
    statement, where = HOLDS[waiting_at]
    registry = target_db_url(pg_demo)  # where registrations go
    with holding(registry, statement):  # no step before the registration takes or waits for it
        run = start_snakemake(pg_demo.project, *args)
        wait_until(lambda: someone_waits(registry, where), run, f"waiting at the {waiting_at}")
        subprocess.run(["pg_ctlcluster", "15", "main", "restart"], check=True)
    stdout, stderr = run.communicate()
    output = stdout + stderr
    assert "Traceback" not in output
    if run.returncode != 0:  # stopped: one line, and the rerun registers
        assert len(cellquery_lines(output)) == 1, output[-4000:]
        snakemake(pg_demo.project, *args)
    key = f"cellquery/{name}.h5ad"
    receipt = json.loads((pg_demo.project / "results" / name / "receipt.json").read_text())
    state = registry_state(pg_demo, [key])
    assert (state["versions"], state["problems"]) == ({key: [receipt["artifact_uid"]]}, [])


def test_a_registry_database_gone_for_good_gives_one_line(pg_demo):
    """The server stopped past the retries (shortened here to one): one line naming the database."""
    code = (
        "import os, subprocess\n"
        "from cellquery.instances import lamin\n"
        "from cellquery.errors import UserError\n"
        "ln = lamin.connect(dict(os.environ))\n"
        "lamin.RECONNECT_DELAYS = (0.5,)\n"
        "ln.Artifact.filter().count()\n"
        "subprocess.run(['pg_ctlcluster', '15', 'main', 'stop'], check=True)\n"
        "try:\n"
        "    lamin.retrying_lost_database(lambda: ln.Artifact.filter().count(), 'register x')\n"
        "except UserError as error:\n"
        "    print(error.lines())\n"
    )
    try:
        found = python_in(pg_demo, code, check=False)
    finally:
        subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=True)
    database = pg_demo.db_url.rsplit("/", 1)[1]
    expected = f"cellquery: register x: lost the connection to the registry database {database} on 127.0.0.1"
    assert len(found.stdout.splitlines()) == 1 and found.stdout.startswith(expected), found
