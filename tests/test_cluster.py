"""A build of two queries through real SLURM (sbatch) on a PostgreSQL-backed instance, one of its shard jobs
cancelled by the scheduler mid-shard, completes on the rerun and equals the local SQLite run.

`.ci/services` installs and starts SLURM and PostgreSQL; in CI (CI=true) a missing service fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import anndata as ad
import pytest
from conftest import (
    REPO,
    ask_target,
    require_service,
    run_config,
    slices_of,
    snakemake,
    start_snakemake,
    wait_until,
)

BUILD = [REPO / "config" / "queries" / f"{name}.yaml" for name in ("kidney-immune", "t-cells")]
QUERIES = f"queries=[{','.join(map(str, BUILD))}]"


def slurm_missing() -> str | None:
    if shutil.which("sbatch") is None:
        return "SLURM is not installed (run .ci/services)"
    nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if nodes.returncode != 0 or not re.search(r"idle|mixed|allocated", nodes.stdout):
        return f"no SLURM node is up: {nodes.stdout.strip() or nodes.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def cluster():
    require_service(slurm_missing())


def slurm_job_of(project, rule: str, wildcards: str) -> str:
    """The SLURM job id of a job: the name of the log file the plugin asked SLURM to write."""
    (log,) = (project / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards).glob("*.log")
    return log.stem


def cancelled_mid_shard(project, args: list[str]) -> tuple[str, str]:
    """Run the build and `scancel` the first query's shard job once its script has opened its log; return the
    SLURM job id and what the stopped run printed."""
    shutil.rmtree(project / ".snakemake" / "slurm_logs" / "rule_shard", ignore_errors=True)
    shutil.rmtree(slices_of(project, BUILD[0]), ignore_errors=True)  # the shard has work to do
    shard_log = project / "logs" / BUILD[0].stem / "shard-0.log"
    shard_log.unlink(missing_ok=True)
    run = start_snakemake(project, *args)
    wait_until(shard_log.exists, run, "the shard started")
    job_id = slurm_job_of(project, "shard", f"{BUILD[0].stem}_0")
    subprocess.run(["scancel", job_id], check=True)
    stdout, stderr = run.communicate()
    assert run.returncode == 1, stderr[-4000:]
    return job_id, stdout + stderr


# The build takes 5-15 minutes (more under load); the PostgreSQL demo it needs is built once per session,
# by whichever test asks first: timed apart (func_only), it does not eat this test's budget.
@pytest.mark.timeout(1800, func_only=True)
def test_a_build_through_slurm_with_a_cancelled_job_equals_the_local_run(cluster, pg_demo, demo):
    args = [
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--config",
        QUERIES,
        *run_config(pg_demo),
    ]
    cancelled, stopped = cancelled_mid_shard(pg_demo.project, args)
    assert "Error in rule shard:" in stopped  # the rule, the job id, what SLURM says
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in stopped

    rerun = snakemake(pg_demo.project, *args)
    output = stopped + rerun.stdout + rerun.stderr
    slurm_ids = re.findall(r"submitted with SLURM jobid (\d+)", output)
    assert len(slurm_ids) >= 11  # per query: resolve, shard(s), census, assemble, register; the shard again
    for job_id in slurm_ids:  # SLURM's own record of each job
        record = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        state = "CANCELLED" if job_id == cancelled else "COMPLETED"
        assert f"JobState={state}" in record and f"WorkDir={pg_demo.project}" in record, record

    snakemake(demo.project, "--config", QUERIES)
    for name in (spec.stem for spec in BUILD):
        on_cluster = ad.read_h5ad(pg_demo.project / "results" / name / f"{name}.h5ad")
        local = ad.read_h5ad(demo.project / "results" / name / f"{name}.h5ad")
        assert on_cluster.obs_names.equals(local.obs_names) and on_cluster.var_names.equals(local.var_names)
        assert (on_cluster.X != local.X).nnz == 0 and on_cluster.obs.equals(local.obs)
        assert_registered(pg_demo, name, local.n_obs)
    assert json.loads((pg_demo.root / "instance.json").read_text())["db"].startswith("postgresql://")
    assert not pg_demo.sqlite_path.exists()


def assert_registered(pg_demo, name: str, n_obs: int) -> None:
    """The target on PostgreSQL holds the query's result, as another process sees it."""
    receipt = json.loads((pg_demo.project / "results" / name / "receipt.json").read_text())
    code = f"a = ln.Artifact.get({receipt['artifact_uid']!r})\nanswer = [a.key, a.n_observations]"
    assert ask_target(pg_demo, code) == [f"cellquery/{name}.h5ad", n_obs]
