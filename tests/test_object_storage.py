"""The demo with its data in object storage (`demo_storage: s3`, a real SeaweedFS server on loopback): the
real snakemake downloads, checks and slices the artifacts and reads the census store over S3, and the
results equal the local demo's."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
import yaml
from conftest import (
    PG_SERVER,
    REPO,
    object_server_missing,
    postgresql_missing,
    require_service,
    slices_of,
    snakemake,
)

from cellquery.files.layout import slice_content
from cellquery.instances.demo_instance import DemoInstance
from cellquery.query.runfiles import read_manifest
from cellquery.storage.integrity import mismatch

pytestmark = pytest.mark.slow


QUERIES = REPO / "config" / "queries"
CACHED = ("demo_storage=s3", "fetch=cache")  # every artifact downloaded (auto may stream some)


def result(project, name) -> ad.AnnData:
    return ad.read_h5ad(project / "results" / name / f"{name}.h5ad")


def test_the_demo_keeps_its_data_in_the_bucket(s3_demo):
    summary = json.loads((s3_demo.root / "summary.json").read_text())
    assert all(store["path"].startswith(f"s3://{s3_demo.bucket}/") for store in summary["census_stores"])
    for version in ("2025-01-30", "2025-11-08"):
        receipt = json.loads((s3_demo.root / "census" / f"{version}.json").read_text())
        assert receipt["path"].startswith(f"s3://{s3_demo.bucket}/")
    generated = set(map(_content, (s3_demo.root / "h5ad").rglob("*.h5ad")))
    local = set(map(_content, (s3_demo.storage / ".lamindb").glob("*.h5ad")))  # results registered there
    assert generated and not generated & local  # no demo h5ad on local disk


def _content(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("query", ["kidney-immune", "t-cells"])
def test_queries_over_s3_equal_the_local_demo(s3_demo, demo, query):
    spec = QUERIES / f"{query}.yaml"
    snakemake(demo.project, "--config", f"query={spec}")
    # slices another query made of the same cells (tests/test_faults.py's) would spare the downloads
    shutil.rmtree(slices_of(s3_demo.project, spec), ignore_errors=True)
    snakemake(s3_demo.project, "--config", f"query={spec}", *CACHED)
    local, remote = result(demo.project, query), result(s3_demo.project, query)
    assert remote.n_obs > 0 and remote.n_vars > 0
    pd.testing.assert_frame_equal(local.obs, remote.obs)
    pd.testing.assert_frame_equal(local.var, remote.var)
    assert (local.X != remote.X).nnz == 0
    results = s3_demo.project / "results" / query
    report = json.loads((results / "validation.json").read_text())
    assert report["status"] == "passed"
    manifest = read_manifest(results / "manifest.tsv")
    assert set(manifest["hash_type"]) <= {f"md5-{parts}" for parts in range(2, 10)}  # multipart, from ETags
    for row in manifest.to_dict("records"):
        assert row["path"].startswith(f"s3://{s3_demo.bucket}/") and "endpoint_url=" in row["storage_root"]
        cached = json.loads((results / "cache" / f"{row['uid']}.json").read_text())["path"]
        assert str(s3_demo.root / "cache") in cached and mismatch(Path(cached), row) is None  # checked copy


def test_a_run_starts_the_stopped_server_before_it_checks_a_new_spec(s3_demo, tmp_path):
    spec = tmp_path / "after-stop.yaml"
    spec.write_text(yaml.safe_dump({"name": "after-stop", "organism": "human", "cells": {"tissue": "lung"}}))
    s3_demo.object_server.stop()  # `make stop-server`: the spec check must still reach the census store
    run = snakemake(s3_demo.project, "plan", "--config", f"query={spec}", "demo_storage=s3")
    assert "plan for after-stop" in run.stdout + run.stderr


def test_a_rerun_downloads_nothing_it_holds(s3_demo):
    spec = QUERIES / "kidney-immune.yaml"
    snakemake(s3_demo.project, "--config", f"query={spec}", *CACHED)
    results = s3_demo.project / "results" / "kidney-immune"
    copies = {p: p.stat().st_mtime_ns for p in map(_cached_path, results.glob("cache/*.json"))}
    slices = slices_of(s3_demo.project, spec)
    for slice_file in slices.glob("*.h5ad"):
        slice_file.unlink()  # the slices must be made again, from the copies already here
    snakemake(s3_demo.project, "-R", "shard", "--config", f"query={spec}", *CACHED)
    assert copies and all(p.stat().st_mtime_ns == mtime for p, mtime in copies.items())
    logs = "".join(p.read_text() for p in (s3_demo.project / "logs" / "kidney-immune").glob("shard-*.log"))
    assert "cached copy" in logs and "is intact" in logs
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    assert all((slices / f"{slice_content(row)}.h5ad").exists() for _, row in manifest.iterrows())  # remade


def _cached_path(receipt):
    return Path(json.loads(receipt.read_text())["path"])


def test_a_streamed_query_equals_the_local_demo_and_downloads_nothing(s3_demo, demo, tmp_path):
    spec = QUERIES / "t-cells.yaml"
    cache = tmp_path / "cache"
    shutil.rmtree(s3_demo.project / "results" / "t-cells", ignore_errors=True)  # made here, streamed
    shutil.rmtree(slices_of(s3_demo.project, spec), ignore_errors=True)
    snakemake(demo.project, "--config", f"query={spec}")
    snakemake(
        s3_demo.project, "--config", f"query={spec}", "demo_storage=s3", "fetch=stream", f"cache_dir={cache}"
    )
    local, remote = result(demo.project, "t-cells"), result(s3_demo.project, "t-cells")
    pd.testing.assert_frame_equal(local.obs, remote.obs)
    assert remote.n_obs > 0 and (local.X != remote.X).nnz == 0
    assert not list(cache.rglob("*.h5ad"))  # nothing downloaded
    results = s3_demo.project / "results" / "t-cells"
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    assert set(manifest["fetch"]) == {"stream"}
    moved = 0
    for row in manifest.itertuples():
        receipt = json.loads((results / "cache" / f"{row.uid}.json").read_text())
        assert receipt["fetch"] == "stream" and 0 < receipt["bytes_moved"] < row.size
        moved += receipt["bytes_moved"]
    read = json.loads((results / "receipt.json").read_text())["bytes_read"]  # what each route read
    streamed = {"downloaded": 0, "streamed": moved, "files_read_in_place": 0, "slices_current": 0}
    assert read["h5ad_route"] == streamed
    assert read["census_route"] > 0  # as TileDB counted the bytes it read from the bucket


def test_plan_shows_how_each_artifact_is_read_and_what_it_moves(s3_demo, tmp_path):
    spec = QUERIES / "kidney-immune.yaml"
    cache = [f"query={spec}", "demo_storage=s3", f"cache_dir={tmp_path / 'cache'}"]
    results = s3_demo.project / "results" / "kidney-immune"

    def remove_slices() -> None:  # with the shard receipts naming them, so that a run makes them again
        for folder in (slices_of(s3_demo.project, spec), results / "shards"):
            shutil.rmtree(folder, ignore_errors=True)

    remove_slices()  # earlier tests' slices: nothing would be read

    def plan(*config) -> tuple[pd.DataFrame, str]:
        printed = output(snakemake(s3_demo.project, "plan", "--config", *cache, *config))
        return pd.read_csv(results / "plan.tsv", sep="\t"), printed

    fresh, printed = plan("fetch=cache")
    assert (fresh["download_bytes"] == fresh["size"]).all() and (fresh["to_fetch"] == fresh["size"]).all()
    assert (fresh["stream_bytes"] > 0).all() and "read from object storage (fetch: cache" in printed
    snakemake(s3_demo.project, "--config", *cache, "fetch=cache")
    done, printed = plan("fetch=auto")
    assert (
        set(done["fetch"]) == {"sliced"} and (done["to_fetch"] == 0).all() and "to fetch: 0.0 MB" in printed
    )
    remove_slices()
    held, _ = plan("fetch=auto")
    assert set(held["fetch"]) == {"cache"} and (held["download_bytes"] == 0).all()  # the copies are here


def test_a_cache_disk_without_room_stops_the_run_before_any_download(s3_demo, tmp_path):
    small_disk = tmp_path / "small-disk"
    small_disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small_disk)], check=True)
    try:
        spec = QUERIES / "t-cells.yaml"
        config = [f"query={spec}", "demo_storage=s3", "fetch=cache", f"cache_dir={small_disk}"]
        run = snakemake(s3_demo.project, "--config", *config, check=False)
        assert run.returncode == 1
        lines = [line for line in run.stderr.splitlines() if line.startswith("cellquery:")]
        assert len(lines) == 1 and f"into {small_disk}" in lines[0] and "cache_headroom_gb" in lines[0]
        assert "rule shard" not in run.stdout + run.stderr and not list(small_disk.iterdir())
    finally:
        subprocess.run(["umount", str(small_disk)], check=True)


def test_the_s3_demo_on_postgresql_builds_and_answers_a_query(tmp_path):
    require_service(postgresql_missing())
    require_service(object_server_missing())
    project = tmp_path / "pg-s3-project"
    project.mkdir()
    url = f"{PG_SERVER}/cellquery_test_{uuid.uuid4().hex[:8]}"
    config = [f"demo_db_url={url}", "demo_storage=s3"]
    try:
        snakemake(project, "demo", "--config", *config)
        snakemake(project, "--config", f"query={QUERIES / 'kidney-immune.yaml'}", *config)
    finally:
        DemoInstance(project, "small", url, "s3").object_server.stop()
    results = project / "results" / "kidney-immune"
    assert json.loads((results / "validation.json").read_text())["status"] == "passed"
    receipt = json.loads((results / "receipt.json").read_text())
    assert receipt["artifact_uid"] and str(project) in receipt["path"]  # the instance's default storage
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    assert manifest["path"].str.startswith("s3://").all()


def output(run) -> str:
    return run.stdout + run.stderr


def test_a_run_reads_the_public_bucket_without_credentials_and_wrong_ones_stop_it_in_one_line(
    s3_demo, tmp_path, monkeypatch
):
    """The demo's bucket is public-read and only the demo build holds its credentials: a query run with no
    AWS variables streams its artifacts and reads the census store unsigned; wrong credentials stop the
    spec check with one line."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    spec = tmp_path / "unsigned.yaml"
    spec.write_text(yaml.safe_dump({"name": "unsigned", "organism": "human", "cells": {"tissue": "lung"}}))
    snakemake(s3_demo.project, "--config", f"query={spec}", "demo_storage=s3", "fetch=stream")
    report = json.loads((s3_demo.project / "results" / "unsigned" / "validation.json").read_text())
    assert report["status"] == "passed"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(spec.read_text().replace("unsigned", "wrong"))
    settings = "object_storage={s3: {key: cellquery-demo, secret: wrong}}"
    run = snakemake(s3_demo.project, "--config", f"query={wrong}", "demo_storage=s3", settings, check=False)
    output = run.stdout + run.stderr
    lines = [line for line in output.splitlines() if line.startswith("cellquery: ")]
    assert run.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert len(lines) == 1 and "census store s3://" in lines[0] and "refused access" in lines[0], lines
