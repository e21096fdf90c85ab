"""Two instances: a build only reads its source (the demo's database refuses writes and is left
byte-identical) and writes results, exports and lineage into its target, the embedded one or a user's own,
where the source artifacts it was made from are recorded zero-copy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, ask_target, clean_env, python_in, snakemake

from cellquery.query.runfiles import read_manifest, read_query

KIDNEY = REPO / "config" / "queries" / "kidney-immune.yaml"

WRITE_TO_SOURCE = """
from pathlib import Path
from cellquery.instances.demo_instance import DemoInstance
from cellquery.instances.source import Source
demo = DemoInstance(Path.cwd(), "small", {db_url!r})
registry = Source("demo", demo).registry()
print(registry.Artifact.filter(suffix=".h5ad").count() > 0)
import lamindb as ln
try:
    ln.ULabel(name="written by a query").save()
except Exception as error:
    print("refused:", type(error).__name__, str(error).splitlines()[0])
"""


def spec_named(folder, name: str, **output):
    data = yaml.safe_load(KIDNEY.read_text())
    data["name"] = name
    data["output"] = data.get("output", {}) | {"key": f"cellquery/{name}.h5ad", **output}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def checksum(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_build_leaves_the_source_as_it_was_and_registers_into_the_target(demo, tmp_path):
    name = f"two-instances-{uuid.uuid4().hex[:6]}"
    before = checksum(demo.sqlite_path)
    snakemake(demo.project, "--config", f"query={spec_named(tmp_path, name, formats=['obs_parquet'])}")
    assert checksum(demo.sqlite_path) == before  # not a byte written into the source's database
    receipt = json.loads((demo.project / "results" / name / "receipt.json").read_text())
    key = f"cellquery/{name}.h5ad"
    source = python_in(
        demo,
        "from cellquery.instances.lamin import connect\nimport os\nln = connect(dict(os.environ))\n"
        "print(ln.Artifact.filter(key__startswith='cellquery/').count())",
    )
    assert source.stdout.strip().splitlines()[-1] == "0"  # no result ever reached the source
    target = ask_target(
        demo,
        f"a = ln.Artifact.get({receipt['artifact_uid']!r})\n"
        "own = ln.setup.settings.instance.uid\n"
        "inputs = [[i.uid, i.key, i.hash, i._hash_type, str(i.path), i.storage.instance_uid, i.storage.root]"
        " for i in a.run.input_artifacts.all()]\n"
        "answer = {'key': a.key, 'storage': a.storage.instance_uid == own, 'inputs': inputs,"
        " 'exports': [e.key for e in ln.Artifact.filter(run=a.run).exclude(uid=a.uid)],"
        " 'source': a.run.params['source'], 'workflow': a.run.initiated_by_run.transform.key}",
    )
    assert target["key"] == key and target["storage"]  # the result is the target's own file
    assert target["exports"] == [f"cellquery/{name}.obs.parquet"]
    assert target["workflow"] == "cellquery" and target["source"]["slug"] == demo.slug
    results = demo.project / "results" / name
    census = read_query(results / "query.json")["census"]
    source_files = {
        row.uid: (row.key, row.hash, row.path) for row in read_manifest(results / "manifest.tsv").itertuples()
    }
    source_files[census["uid"]] = (census["key"], census["record"]["hash"], census["path"])
    assert {uid for uid, *_ in target["inputs"]} == set(receipt["inputs"])
    for uid, artifact_key, file_hash, _, path, owner, root in target["inputs"]:
        # zero-copy: the source's uid, key, hash and file, in a storage location the source owns
        assert (artifact_key, file_hash, path) == source_files[uid] and Path(path).exists()
        assert owner == target["source"]["uid"] and root == str(demo.storage)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_source_database_refuses_writes(database, request):
    demo = request.getfixturevalue("demo" if database == "sqlite" else "pg_demo")
    found = python_in(demo, WRITE_TO_SOURCE.format(db_url=demo.db_url), check=False)
    lines = found.stdout.strip().splitlines()
    assert lines and lines[0] == "True", found.stderr[-3000:]  # read
    expected = "readonly database" if database == "sqlite" else "read-only transaction"
    assert lines[1].startswith("refused:") and expected in lines[1], found.stdout


@pytest.mark.slow
def test_results_go_to_a_users_own_instance(demo, tmp_path):
    """`target: owner/name` names an instance of the user's (here made by `lamin init` in their HOME)."""
    name, instance = f"own-target-{uuid.uuid4().hex[:6]}", f"mine-{uuid.uuid4().hex[:6]}"
    home, workdir = tmp_path / "home", tmp_path / "elsewhere"
    workdir.mkdir(parents=True)
    lamin = [str(BIN / "lamin"), "init", "--storage", str(tmp_path / "storage"), "--name", instance]
    subprocess.run([*lamin, "--modules", "bionty"], cwd=workdir, env=clean_env(HOME=str(home)), check=True)
    spec = spec_named(tmp_path, name)
    snakemake(
        demo.project, "--config", f"query={spec}", f"target=anonymous/{instance}", env={"HOME": str(home)}
    )
    receipt = json.loads((demo.project / "results" / name / "receipt.json").read_text())
    lookup = (
        "from pathlib import Path\nfrom cellquery.instances.target import Target\n"
        f"ln = Target.from_config({{'target': 'anonymous/{instance}'}}, Path.cwd()).connect()\n"
        f"a = ln.Artifact.get({receipt['artifact_uid']!r})\n"
        "print(a.key, a.run.input_artifacts.count(), str(a.path).startswith(" + repr(str(tmp_path)) + "))"
    )
    found = subprocess.run(
        [str(BIN / "python"), "-c", lookup], env=clean_env(HOME=str(home)), capture_output=True, text=True
    )
    assert found.stdout.split()[-3:] == [f"cellquery/{name}.h5ad", str(len(receipt["inputs"])), "True"], found


@pytest.mark.slow
def test_a_source_file_registered_anew_keeps_one_record_in_the_target(demo, tmp_path):
    """A rebuilt source registers the same files under new uids: the target's record of each file (storage,
    key and hash) takes the new uid, its earlier lineage kept, and no second record is made."""
    instance, home = f"renamed-{uuid.uuid4().hex[:6]}", tmp_path / "home"
    (tmp_path / "workdir").mkdir()
    lamin = [str(BIN / "lamin"), "init", "--storage", str(tmp_path / "storage"), "--name", instance]
    subprocess.run(
        [*lamin, "--modules", "bionty"], cwd=tmp_path / "workdir", env=clean_env(HOME=str(home)), check=True
    )
    settings = (f"target=anonymous/{instance}",)
    connect = (
        "from pathlib import Path\nfrom cellquery.instances.target import Target\n"
        f"ln = Target.from_config({{'target': 'anonymous/{instance}'}}, Path.cwd()).connect()\n"
    )

    def in_target(code: str) -> list[str]:
        found = subprocess.run(
            [str(BIN / "python"), "-c", connect + code],
            env=clean_env(HOME=str(home)),
            capture_output=True,
            text=True,
        )
        assert found.returncode == 0, found.stderr[-3000:]
        return found.stdout.split()

    first = spec_named(tmp_path, f"first-{instance}")
    snakemake(demo.project, "--config", f"query={first}", *settings, env={"HOME": str(home)})
    receipt = json.loads((demo.project / "results" / first.stem / "receipt.json").read_text())
    census_uid = read_query(demo.project / "results" / first.stem / "query.json")["census"]["uid"]
    uid = next(u for u in receipt["inputs"] if u != census_uid)  # an h5ad of the source
    old = "Renamed0000000000000"
    in_target(
        f"ln.Artifact.objects.filter(uid={uid!r}).update(uid={old!r})\nprint('ok')"
    )  # as recorded before
    second = spec_named(tmp_path, f"second-{instance}")
    snakemake(demo.project, "--config", f"query={second}", *settings, env={"HOME": str(home)})
    found = in_target(
        f"a = ln.Artifact.get(uid={uid!r})\n"
        "print(ln.Artifact.objects.filter(key=a.key, hash=a.hash).count(),"
        f" ln.Artifact.objects.filter(uid={old!r}).count(),"
        f" ln.Artifact.get({receipt['artifact_uid']!r}).run.input_artifacts.filter(uid={uid!r}).count())"
    )
    assert found[-3:] == ["1", "0", "1"], found


def make_smoke(project, *settings: str) -> subprocess.CompletedProcess:
    command = ["make", "-s", "-C", str(REPO), "--no-print-directory", "smoke-public", f"PROJECT={project}"]
    return subprocess.run([*command, *settings], env=clean_env(), capture_output=True, text=True)


@pytest.mark.slow
def test_the_smoke_target_runs_on_the_demo_and_stops_in_one_line_without_a_network(demo, tmp_path):
    on_demo = make_smoke(demo.project, "SMOKE_SPEC=config/smoke/demo.yaml")
    assert on_demo.returncode == 0, on_demo.stderr[-3000:]
    assert "validation        passed: 100 cells and 5 genes agree" in on_demo.stdout, on_demo.stdout
    public = make_smoke(tmp_path)  # the public laminlabs/cellxgene, for a machine without a network
    if public.returncode == 0:  # a machine with one: the query ran end to end
        assert "validation        passed" in public.stdout, public.stdout
        return
    lines = [line for line in (public.stdout + public.stderr).splitlines() if line.startswith("cellquery:")]
    assert len(lines) == 1, public.stderr[-3000:]
    assert "source.instance: cannot connect to 'laminlabs/cellxgene'" in lines[0]
    assert "Traceback" not in public.stdout + public.stderr
