"""`snakemake plan`: what a query will fetch and hold, before any h5ad is read, and that the run agrees."""

from __future__ import annotations

import json
import re
import time

import h5py
import pandas as pd
import pytest
import yaml
from conftest import REPO, slices_of, snakemake

QUERIES = REPO / "config" / "queries"


@pytest.mark.slow
@pytest.mark.parametrize("query", ["kidney-immune.yaml", "t-cells.yaml"])
def test_the_plan_reads_no_h5ad_and_matches_the_run(demo, tmp_path, query):
    name = f"plan-{query.split('.')[0]}-{time.time_ns() % 10**8}"
    spec = tmp_path / "spec.yaml"
    data = yaml.safe_load((QUERIES / query).read_text())
    output = data.get("output", {}) | {"key": f"cellquery/{name}.h5ad"}  # not the shipped query's key
    spec.write_text(yaml.safe_dump(data | {"name": name, "output": output}))
    results, slices = demo.project / "results" / name, slices_of(demo.project, spec)
    sliced_before = set(slices.glob("*"))
    shown = snakemake(demo.project, "--cores", "1", "plan", "--config", f"query={spec}")
    assert set(slices.glob("*")) == sliced_before and not (results / "cache").exists()
    assert not list(results.glob("*.h5ad"))  # nothing fetched, sliced or assembled
    plan = pd.read_csv(results / "plan.tsv", sep="\t")
    output = shown.stdout + shown.stderr
    assert f"plan for {name}: {len(plan)} datasets of" in output
    assert all(dataset in output for dataset in plan["dataset_id"])
    assert all(title[:30] in output for title in plan["title"])  # datasets by title too
    join = yaml.safe_load(spec.read_text())["output"]["gene_join"]
    assert f"  {join} join: " in output
    planned_values = int(
        re.search(r"census route: .* up to ([\d,]+) stored values", output)[1].replace(",", "")
    )

    snakemake(demo.project, "--config", f"query={spec}")
    report = json.loads((results / "validation.json").read_text())
    ran = pd.DataFrame(report["per_dataset"]).set_index("dataset_id")
    planned = plan.set_index("dataset_id")
    assert list(planned.index) == list(ran.index)  # the same datasets
    assert (planned["selected_cells"] == ran["census_cells"]).all()
    assert (planned["selected_cells"] == ran["h5ad_cells_census_rules"]).all()
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t").set_index("dataset_id")
    assert (planned["size"] == manifest.loc[planned.index, "size"]).all() and planned["size"].sum() > 0
    assert planned["selected_cells"].sum() == report["totals"]["census_cells"] > 0
    genes = json.loads((results / "query.json").read_text())["gene_coverage"]
    kept = genes["in_every_dataset"] if join == "inner" else genes["genes_asked"]
    assert report["totals"]["h5ad_genes"] == kept  # the plan's gene count is the result's
    with h5py.File(results / "census.h5ad", "r") as census:  # the values the census route read
        read = len(census["X/data"])
    assert read == planned_values if "genes" not in data else 0 < read <= planned_values
