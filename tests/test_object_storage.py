"""The demo with its data in object storage (`demo_storage: s3`, a real SeaweedFS server on loopback): the
real snakemake downloads, checks and slices the artifacts and reads the census store over S3, and the
results equal the local demo's."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
from conftest import REPO, lamin_hash, object_server_missing, require_service, snakemake

from cellquery.lamin import DemoInstance

pytestmark = pytest.mark.slow


QUERIES = REPO / "config" / "queries"
S3 = ("--config", "demo_storage=s3")


@pytest.fixture(scope="module")
def s3_demo(tmp_path_factory):
    """The small demo built with its h5ads and census stores in a bucket of its own server."""
    require_service(object_server_missing())
    project = tmp_path_factory.mktemp("s3-project")
    snakemake(project, "demo", *S3)
    demo = DemoInstance(project, "small", storage_kind="s3")
    yield demo
    demo.object_server.stop()


def result(project, name) -> ad.AnnData:
    return ad.read_h5ad(project / "results" / name / f"{name}.h5ad")


def test_the_demo_keeps_its_data_in_the_bucket(s3_demo):
    summary = json.loads((s3_demo.root / "summary.json").read_text())
    assert all(store["path"].startswith(f"s3://{s3_demo.bucket}/") for store in summary["census_stores"])
    for version in ("2025-01-30", "2025-07-01"):
        receipt = json.loads((s3_demo.root / "census" / f"{version}.json").read_text())
        assert receipt["path"].startswith(f"s3://{s3_demo.bucket}/")
    assert not list((s3_demo.storage / ".lamindb").glob("*.h5ad"))  # no h5ad on local disk


@pytest.mark.parametrize("query", ["kidney-immune", "t-cells"])
def test_queries_over_s3_equal_the_local_demo(
    s3_demo, demo, ln, query
):  # ln first: lamin_hash imports lamindb
    spec = QUERIES / f"{query}.yaml"
    snakemake(demo.project, "--config", f"query={spec}")
    snakemake(s3_demo.project, "--config", f"query={spec}", "demo_storage=s3")
    local, remote = result(demo.project, query), result(s3_demo.project, query)
    assert remote.n_obs > 0 and remote.n_vars > 0
    pd.testing.assert_frame_equal(local.obs, remote.obs)
    pd.testing.assert_frame_equal(local.var, remote.var)
    assert (local.X != remote.X).nnz == 0
    results = s3_demo.project / "results" / query
    report = json.loads((results / "validation.json").read_text())
    assert report["status"] == "passed"
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    for row in manifest.itertuples():
        assert row.path.startswith(f"s3://{s3_demo.bucket}/") and "endpoint_url=" in row.storage_root
        cached = json.loads((results / "cache" / f"{row.uid}.json").read_text())["path"]
        assert str(s3_demo.root / "cache") in cached and lamin_hash(cached) == row.hash  # checked copy


def test_a_rerun_downloads_nothing_it_holds(s3_demo):
    spec = QUERIES / "kidney-immune.yaml"
    snakemake(s3_demo.project, "--config", f"query={spec}", "demo_storage=s3")
    results = s3_demo.project / "results" / "kidney-immune"
    copies = {p: p.stat().st_mtime_ns for p in map(_cached_path, results.glob("cache/*.json"))}
    for slice_file in results.glob("slices/*.h5ad"):
        slice_file.unlink()  # the slices must be made again, from the copies already here
    snakemake(s3_demo.project, "-R", "shard", "--config", f"query={spec}", "demo_storage=s3")
    assert copies and all(p.stat().st_mtime_ns == mtime for p, mtime in copies.items())
    logs = "".join(p.read_text() for p in (s3_demo.project / "logs" / "kidney-immune").glob("shard-*.log"))
    assert "cached copy" in logs and "is intact" in logs
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    assert all((results / "slices" / f"{uid}.h5ad").exists() for uid in manifest["uid"])  # remade


def _cached_path(receipt):
    return Path(json.loads(receipt.read_text())["path"])
