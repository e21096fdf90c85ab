"""Dataset builds: many query specs in one real snakemake run, one DAG templated over {query}."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import pandas as pd
import pytest
from conftest import REPO, slices_of, snakemake, spec_file

from cellquery.files.layout import BUILD_TABLE, QueryFiles, slice_content
from cellquery.query.runfiles import read_manifest

pytestmark = pytest.mark.slow

QUERIES = REPO / "config" / "queries"


def queries(*paths) -> str:
    return f"queries=[{','.join(map(str, paths))}]"


def result(project, name) -> ad.AnnData:
    return ad.read_h5ad(project / QueryFiles(name).result)


def test_a_build_of_specs_fetches_and_slices_each_shared_artifact_once(s3_demo, tmp_path):
    """Blood T cells asked twice of the newest release (one cell criteria: their slices are shared), once of
    2025-01-30 (files of another schema generation: other artifacts, other slices) and all blood cells (the
    same artifacts as the newest's T cells, slices of their own), downloaded from the bucket into one
    cache."""
    folder = tmp_path / "specs"
    folder.mkdir()
    t_cells = {"tissue": "blood", "cell_type": "T cell"}
    specs = [
        spec_file(folder, "build-blood-t", cells=t_cells),
        spec_file(folder, "build-blood-t-again", cells=t_cells),
        spec_file(folder, "build-blood-t-jan", source={"version": "2025-01-30"}, cells=t_cells),
        spec_file(folder, "build-blood", cells={"tissue": "blood"}),
    ]
    storage = ["demo_storage=s3", "fetch=cache", f"cache_dir={tmp_path / 'cache'}"]
    snakemake(s3_demo.project, "--config", queries(folder), *storage)
    table = pd.read_csv(s3_demo.project / BUILD_TABLE, sep="\t").set_index("query")
    assert set(table.index) >= {p.stem for p in specs} and set(table["validation"]) == {"passed"}
    manifests = {p.stem: manifest(s3_demo.project, p.stem) for p in specs}
    latest = set(manifests["build-blood-t"]) & set(manifests["build-blood"])
    assert latest, manifests  # the same release's artifacts, shared by its queries
    assert not set(manifests["build-blood-t"]) & set(manifests["build-blood-t-jan"])  # another generation
    for path in specs:  # the spec check at parse time resolved each query; resolve asked no second time
        resolve_log = (s3_demo.project / QueryFiles(path.stem).log("resolve")).read_text()
        assert "the registry is not asked again" in resolve_log
    logs = {p.stem: shard_logs(s3_demo.project, p.stem) for p in specs}
    every_uid = set.union(*map(set, manifests.values()))
    fetched = {uid: sum(_downloads(log, uid) for log in logs.values()) for uid in every_uid}
    assert all(fetched[uid] == 1 for uid in manifests["build-blood"]), fetched  # every file it needs, once
    assert max(fetched.values()) == 1, fetched  # none twice
    asked_twice = ("build-blood-t", "build-blood-t-again")
    shared = contents(s3_demo.project, asked_twice[0])
    assert shared == contents(s3_demo.project, asked_twice[1])
    for content, uid in shared.items():  # one slice per file, made once: the other query's job found it made
        assert sum(_slicings(logs[name], uid) for name in asked_twice) == 1, content
    built = {p.stem: result(s3_demo.project, p.stem) for p in specs}
    for path in specs:
        shutil.rmtree(s3_demo.project / QueryFiles(path.stem).dir)
        shutil.rmtree(slices_of(s3_demo.project, path), ignore_errors=True)
        snakemake(s3_demo.project, "--config", f"query={path}", *storage)
        alone = result(s3_demo.project, path.stem)
        pd.testing.assert_frame_equal(built[path.stem].obs, alone.obs)
        assert (built[path.stem].X != alone.X).nnz == 0
        receipt = json.loads((s3_demo.project / QueryFiles(path.stem).receipt).read_text())
        assert receipt["reused"] and receipt["version"] == "1"  # one version each, the same content


def manifest(project, name) -> list[str]:
    return pd.read_csv(project / QueryFiles(name).manifest, sep="\t")["uid"].tolist()


def contents(project, name) -> dict[str, str]:
    """A query's artifacts by the content their slices are named by (`layout.slice_content`)."""
    rows = read_manifest(project / QueryFiles(name).manifest).to_dict("records")
    return {slice_content(row): row["uid"] for row in rows}


def shard_logs(project, name) -> str:
    folder = project / QueryFiles(name).logs
    return "".join(path.read_text() for path in folder.glob("shard-*.log"))


def _downloads(log: str, uid: str) -> int:
    return sum(f"artifact {uid} (" in line and " MB in " in line for line in log.splitlines())


def _slicings(log: str, uid: str) -> int:
    return sum(f"artifact {uid} sliced [" in line for line in log.splitlines())


def test_adding_editing_and_removing_a_spec_reruns_only_that_query(demo, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    first = spec_file(folder, "build-rerun-a", cells={"tissue": "kidney", "cell_type": "T cell"})
    snakemake(demo.project, "--config", queries(folder))
    receipt_a = demo.project / QueryFiles("build-rerun-a").receipt
    before = receipt_a.stat().st_mtime_ns
    spec_file(folder, "build-rerun-b", cells={"tissue": "blood", "cell_type": "T cell"})
    added = snakemake(demo.project, "--config", queries(folder))
    assert receipt_a.stat().st_mtime_ns == before and "build-rerun-b" in added.stderr
    spec_file(folder, "build-rerun-b", cells={"tissue": "blood", "cell_type": "B cell"})
    edited = snakemake(demo.project, "--config", queries(folder))
    assert receipt_a.stat().st_mtime_ns == before and "wildcards: query=build-rerun-a" not in edited.stdout
    (folder / "build-rerun-b.yaml").unlink()
    receipt_b = demo.project / QueryFiles("build-rerun-b").receipt
    kept = receipt_b.stat().st_mtime_ns
    snakemake(demo.project, "--config", queries(first))
    assert receipt_b.stat().st_mtime_ns == kept and receipt_a.stat().st_mtime_ns == before


def test_bad_specs_in_a_build_are_refused_shape_first_one_line_each_and_no_job(demo, tmp_path):
    """Two rounds, each naming every problem of its kind: the shape of every spec (two malformed specs, two
    lines, the registry not asked), then, once all are well-formed, every spec against the registry."""
    folder = tmp_path / "specs"
    folder.mkdir()
    spec_file(folder, "build-good", cells={"tissue": "kidney"})
    spec_file(folder, "build-bad-organism", organism="humann")
    spec_file(folder, "build-bad-sample", sample={"max_cells": 0})
    spec_file(folder, "build-bad-tissue", cells={"tissue": "kidny"})
    shape = snakemake(demo.project, "--config", queries(folder), check=False)
    lines = [line for line in shape.stderr.splitlines() if line.startswith("cellquery:")]
    assert shape.returncode == 1 and len(lines) == 2, shape.stderr
    assert "build-bad-organism.yaml: organism" in lines[0] and "build-bad-sample.yaml: sample" in lines[1]
    for mended in ("build-bad-organism", "build-bad-sample"):
        spec_file(folder, mended, cells={"tissue": "blood"})
    names = snakemake(demo.project, "--config", queries(folder), check=False)
    lines = [line for line in names.stderr.splitlines() if line.startswith("cellquery:")]
    assert names.returncode == 1 and len(lines) == 1 and "build-bad-tissue.yaml: cells.tissue" in lines[0]
    assert "Building DAG" not in shape.stdout + shape.stderr + names.stdout + names.stderr
    assert not (demo.project / QueryFiles("build-good").dir).exists()


def test_two_specs_with_one_name_give_one_line_naming_both_files(demo, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    first = spec_file(folder, "build-twice", cells={"tissue": "kidney"})
    second = folder / "copy.yaml"
    second.write_text(first.read_text())
    run = snakemake(demo.project, "--config", queries(first, second), check=False)
    lines = [line for line in run.stderr.splitlines() if line.startswith("cellquery:")]
    assert run.returncode == 1 and len(lines) == 1
    assert str(first) in lines[0] and str(second) in lines[0] and "name 'build-twice'" in lines[0]


def test_storage_settings_that_do_not_apply_to_the_local_demo_rerun_nothing(demo, tmp_path):
    """The local demo's files are read in place: download and object storage settings do not apply to it,
    so changing them leaves a finished query finished."""
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = spec_file(folder, "local-settings", cells={"tissue": "blood", "cell_type": ["B cell"]})
    snakemake(demo.project, "--config", f"query={spec}")
    settings = ["fetch=stream", "cache_headroom_gb=5", f"cache_dir={tmp_path / 'cache'}"]
    again = snakemake(demo.project, "--config", f"query={spec}", *settings)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stderr[-2000:]
