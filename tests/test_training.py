"""Training on a result: `examples/train.py` trains through each loader on a fresh demo result and prints the
held-out accuracy; both loaders must serve exactly the result's cells with their labels, and the result's
Collection must hold it."""

from __future__ import annotations

import json
import math
import re
import subprocess
import uuid
import zlib

import anndata as ad
import numpy as np
import pytest
import yaml
from conftest import BIN, REPO, ask_target, clean_env, snakemake

KIDNEY = REPO / "config" / "queries" / "kidney-immune.yaml"


def train(results, figures, *args: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "python"), str(REPO / "examples" / "train.py"), str(results), "--json", str(figures)]
    run = subprocess.run([*command, *args], capture_output=True, text=True, env=clean_env())
    assert run.returncode == 0, run.stderr[-4000:]
    return run


@pytest.mark.slow
def test_both_loaders_serve_the_result_cells_with_their_labels(demo, tmp_path):
    name = f"train-{uuid.uuid4().hex[:6]}"  # fresh in a reused project too
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(yaml.safe_load(KIDNEY.read_text()) | {"name": name}))
    snakemake(demo.project, "--config", f"query={spec}")
    results = demo.project / "results" / name
    receipt = json.loads((results / "receipt.json").read_text())
    totals = json.loads((results / "validation.json").read_text())["totals"]
    result = ad.read_h5ad(results / f"{name}.h5ad", backed="r")
    assert totals["census_cells"] == result.n_obs == receipt["n_obs"] > 0  # all within the Census rules

    shown = train(
        results, tmp_path / "figures.json", "--route", "both", "--batch-size", "256", "--epochs", "2"
    )
    figures = json.loads((tmp_path / "figures.json").read_text())
    expected = result.obs["cell_type"].astype(str).value_counts().to_dict()
    assert len(expected) == 2
    for route in ("lamin", "census"):
        stats = figures[route]
        assert stats["cells"] == result.n_obs
        assert stats["labels"] == expected
        assert math.isfinite(stats["loss"]) and 0 <= stats["accuracy"] <= 1
        printed = (
            rf"^{route}\s+{result.n_obs:,} cells\s+{stats['steps']} steps .* held-out accuracy "
            rf"[01]\.\d{{3}} \({stats['held_out']:,} cells\)"
        )
        assert re.search(printed, shown.stdout, re.MULTILINE), shown.stdout

    genes_total = np.asarray(result.X[:].sum(axis=0), dtype=np.float64).ravel()
    for route in ("lamin", "census"):  # each gene's counts arrive under that gene, on both routes
        served = ask_target(  # the lamin route reads the result's collection in the target
            demo,
            "from cellquery.query.training import Result, batches\n"
            f"stream = batches({route!r}, Result(PosixPath({str(results)!r})), 'cell_type', 1024, ln=ln)\n"
            "answer = sum(x.double().sum(dim=0) for x, _, _ in stream).tolist()",
        )
        assert np.allclose(served, genes_total) and genes_total.sum() > 0

    collection = ask_target(
        demo,
        f"c = ln.Collection.get(uid={receipt['collection_uid']!r})\n"
        "answer = [c.key, c.version_tag, [a.uid for a in c.artifacts.all()], c.run.uid]",
    )
    expected = [f"cellquery/{name}", receipt["version"], [receipt["artifact_uid"]], receipt["run_uid"]]
    assert collection == expected

    snakemake(demo.project, "--config", f"query={spec}", "-R", "register")  # identical content: reused
    again = json.loads((results / "receipt.json").read_text())
    assert again["reused"] and again["collection_uid"] == receipt["collection_uid"]
    assert ask_target(demo, f"answer = ln.Collection.filter(key='cellquery/{name}').count()") == 1


@pytest.mark.slow
def test_both_loaders_serve_a_samples_cells_only(demo, tmp_path):
    """A result drawn with `sample:`: the census route serves the sample's cells, not every cell the query's
    filter selects."""
    name = f"train-sample-{uuid.uuid4().hex[:6]}"
    spec = tmp_path / "spec.yaml"
    sample = {"max_cells": 150, "per": ["cell_type"], "seed": 3}
    columns = {"obs_columns": ["cell_type", "author_cell_type"]}
    spec.write_text(
        yaml.safe_dump(yaml.safe_load(KIDNEY.read_text()) | {"name": name, "sample": sample} | columns)
    )
    snakemake(demo.project, "--config", f"query={spec}")
    results = demo.project / "results" / name
    result = ad.read_h5ad(results / f"{name}.h5ad", backed="r")
    train(results, tmp_path / "figures.json", "--route", "both", "--batch-size", "64", "--epochs", "1")
    figures = json.loads((tmp_path / "figures.json").read_text())
    expected = result.obs["cell_type"].astype(str).value_counts().to_dict()
    assert result.n_obs == sum(expected.values()) <= 150 * len(expected)
    assert figures["lamin"]["labels"] == figures["census"]["labels"] == expected

    command = [str(BIN / "python"), str(REPO / "examples" / "train.py"), str(results), "--route", "census"]
    refused = subprocess.run(
        [*command, "--label", "author_cell_type"], capture_output=True, text=True, env=clean_env()
    )
    assert refused.returncode != 0 and refused.stderr.strip().splitlines() == [
        "cellquery: --label 'author_cell_type': the census route serves the Census' obs columns only "
        "(author_cell_type is the source datasets' own); train it with --route lamin"
    ]


@pytest.mark.slow
def test_a_result_of_the_s3_demo_trains_on_both_routes_with_held_out_accuracy(s3_demo, tmp_path):
    """The census route reaches the store in the bucket as the run did; both routes hold out the same cells
    (one in five, by join key) and measure accuracy on them after the training passes."""
    name = f"train-s3-{uuid.uuid4().hex[:6]}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(yaml.safe_load(KIDNEY.read_text()) | {"name": name}))
    snakemake(s3_demo.project, "--config", f"query={spec}", "demo_storage=s3")
    results = s3_demo.project / "results" / name
    result = ad.read_h5ad(results / f"{name}.h5ad", backed="r")
    train(results, tmp_path / "figures.json", "--route", "both", "--epochs", "3")
    figures = json.loads((tmp_path / "figures.json").read_text())
    keys = result.obs["dataset_id"].astype(str) + ":" + result.obs["observation_joinid"].astype(str)
    held = sum(zlib.crc32(key.encode()) % 5 == 0 for key in keys)
    expected = result.obs["cell_type"].astype(str).value_counts().to_dict()
    for route in ("lamin", "census"):
        stats = figures[route]
        assert stats["cells"] == result.n_obs and stats["labels"] == expected
        assert stats["held_out"] == held and 0 < held < result.n_obs / 3
        assert stats["epochs"] == 3 and stats["steps"] >= 3 * ((result.n_obs - held) // 256)
        assert stats["accuracy"] > 0.8  # two cell types, well apart: trained, not the starting weights
