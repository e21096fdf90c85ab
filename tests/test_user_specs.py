"""Specs a new user wrote (not the shipped examples), through the real snakemake, checked against the h5ads.

Each is a case that once went wrong: obs_columns crashed the route comparison, a marker panel lost its genes
without a word, a dataset without selected cells shrank the gene join, and reusing an older version's content
left another version "latest".
"""

from __future__ import annotations

import json
import time

import anndata as ad
import pandas as pd
import pytest
import yaml
from conftest import ask_target, snakemake
from test_pipeline import check_result, expected_cells, run_query

from cellquery.demo import catalog
from cellquery.query.registration import collection_key

pytestmark = pytest.mark.slow
T_CELL_MARKERS = [
    "PTPRC", "CD3E", "CD3D", "CD3G", "CD2", "CD247", "IL7R", "CD4", "CCR7", "CD40LG",
    "CD8A", "CD8B", "GZMK", "CCL5", "NKG7", "GNLY", "KLRD1", "GZMB", "PRF1", "NCAM1",
]  # fmt: skip


def write_spec(tmp_path, spec: dict):
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def unique(name: str) -> str:
    return f"{name}-{time.time_ns() % 10**8}"  # fresh in a reused test project too


def summary_lines(output: str, name: str) -> int:
    return output.count(f"query {name}  (spec digest")


def test_obs_columns_keep_what_was_asked_and_validate(demo, ln, tmp_path):
    name = unique("kidney-columns")
    spec = {
        "name": name,
        "organism": "Homo sapiens",
        "cells": {"cell_type": ["dendritic cell", "neutrophil"], "tissue": "kidney"},
        "obs_columns": ["cell_type", "tissue", "donor_id"],  # the README's example
    }
    first = run_query(demo.project, write_spec(tmp_path, spec))
    expected = expected_cells(
        ln,
        catalog.V2,
        catalog.HUMAN,
        lambda obs: obs["cell_type"].isin(["dendritic cell", "neutrophil"]) & (obs["tissue"] == "kidney"),
    )
    result, receipt = check_result(demo.project, name, expected)
    assert list(result.obs.columns) == ["dataset_id", "observation_joinid", "cell_type", "tissue", "donor_id"]
    assert set(result.obs["cell_type"].cat.categories) == {"dendritic cell", "neutrophil"}  # no unused ones
    census = ad.read_h5ad(demo.project / "results" / name / "census.h5ad", backed="r")
    assert set(census.obs["cell_type"].cat.categories) == {"dendritic cell", "neutrophil"}
    cell_types = ask_target(
        demo, f"answer = [c.name for c in ln.Artifact.get({receipt['artifact_uid']!r}).cell_types.all()]"
    )
    assert set(cell_types) == {"dendritic cell", "neutrophil"}  # linked by label
    assert summary_lines(first.stdout + first.stderr, name) == 1  # printed once, by the run that built it
    again = run_query(demo.project, write_spec(tmp_path, spec))
    assert "Nothing to be done" in again.stdout + again.stderr
    assert summary_lines(again.stdout + again.stderr, name) == 0


def test_a_marker_panel_keeps_every_gene_all_datasets_measure_and_names_the_rest(demo, ln, tmp_path):
    name = unique("t-cell-markers")
    spec = {
        "name": name,
        "organism": "human",
        "cells": {
            "cell_type": {"descendants_of": "T cell"},
            "tissue": ["blood", "spleen"],
            "is_primary_data": True,
        },
        "genes": T_CELL_MARKERS,
        "output": {"gene_join": "inner"},
    }
    path = write_spec(tmp_path, spec)
    plan = snakemake(demo.project, "plan", "--config", f"query={path}").stderr
    run_query(demo.project, path)
    results = demo.project / "results" / name
    result = ad.read_h5ad(results / f"{name}.h5ad", backed="r")
    ids = json.loads((results / "query.json").read_text())["gene_ids"]
    symbols = dict(zip(ids, T_CELL_MARKERS, strict=True))
    sources = [adata for _, adata in _contributing(ln, results)]
    every = set(ids).intersection(*(set(a.raw.var_names) for a in sources))
    some = set(ids).intersection(set().union(*(set(a.raw.var_names) for a in sources))) - every
    assert len(sources) == 2 and set(result.var_names) == every and len(every) >= 12 and some
    assert set(every) | some == set(ids)  # the demo measures every marker somewhere
    report = json.loads((results / "validation.json").read_text())
    assert report["status"] == "passed" and set(report["genes"]["partial_genes"]) == some
    assert report["genes"]["requested"] == 20 and report["genes"]["kept"] == len(every)
    lacking = f"{len(some)} requested genes are measured by only some of the 2 datasets"
    assert lacking in plan and all(symbols[g] in plan for g in some), plan
    assert lacking in (demo.project / "logs" / name / "assemble.log").read_text()
    # the spec check's warning, on the terminal
    [warning] = [line for line in plan.splitlines() if line.startswith("cellquery: warning:")]
    assert "so the inner join leaves them out; output.gene_join: outer keeps them" in warning
    assert all(symbols[g] in warning for g in some), warning


def _contributing(ln, results):
    receipt = json.loads((results / "receipt.json").read_text())
    for uid in receipt["inputs"][:-1]:  # the last input is the census store
        yield uid, ad.read_h5ad(ln.Artifact.get(uid=uid).cache())


def test_a_dataset_without_selected_cells_neither_joins_nor_counts_as_input(demo, ln, tmp_path):
    name = unique("blood-b-primary")
    spec = {
        "name": name,
        "organism": "human",
        "cells": {"cell_type": "B cell", "tissue": "blood", "is_primary_data": True},
        "output": {"gene_join": "inner"},
    }
    output = run_query(demo.project, write_spec(tmp_path, spec)).stderr
    results = demo.project / "results" / name
    expected = expected_cells(
        ln,
        catalog.V2,
        catalog.HUMAN,
        lambda obs: (obs["cell_type"] == "B cell") & (obs["tissue"] == "blood") & obs["is_primary_data"],
    )
    result, receipt = check_result(demo.project, name, expected)
    (pbmc,) = expected.values()
    assert set(result.var_names) == set(pbmc.raw.var_names)  # the re-analysis' panel did not shrink it
    manifest = {row["key"]: row["uid"] for row in _manifest(results)}
    (reanalysis,) = [uid for key, uid in manifest.items() if _dataset_id("hs-blood-reanalysis") in key]
    # matched without cells: the re-analysis (its B cells are not primary) and the datasets whose curation
    # failed (no links: kept for the census store, which holds no cell of theirs the query selects)
    (pbmc_key,) = [key for key, uid in manifest.items() if uid not in receipt["matched_without_cells"]]
    assert reanalysis in receipt["matched_without_cells"] and _dataset_id("hs-blood-pbmc") in pbmc_key
    assert receipt["inputs"][:-1] == [manifest[pbmc_key]]
    inputs, params = ask_target(
        demo,
        f"run = ln.Artifact.get({receipt['artifact_uid']!r}).run\n"
        "answer = [[a.uid for a in run.input_artifacts.all()], run.params]",
    )
    assert set(inputs) == set(receipt["inputs"]) and reanalysis not in inputs
    assert params["matched_without_cells"] == receipt["matched_without_cells"]
    assert f"datasets          1 with selected cells, of {len(manifest)} matched" in output


def _manifest(results):
    return pd.read_csv(results / "manifest.tsv", sep="\t").to_dict("records")


def _dataset_id(slug: str) -> str:
    return next(d.dataset_id for d in catalog.datasets("small") if d.slug == slug)


def test_the_build_just_made_is_the_latest_even_when_it_reuses_an_older_version(demo, ln, tmp_path):
    name = unique("kidney-latest")
    base = {
        "name": name,
        "organism": "human",
        "cells": {"cell_type": ["dendritic cell", "neutrophil"], "tissue": "kidney"},
    }
    receipts = []
    for version in (catalog.V2, catalog.V1, catalog.V2):
        run_query(demo.project, write_spec(tmp_path, base | {"source": {"version": version}}))
        receipts.append(json.loads((demo.project / "results" / name / "receipt.json").read_text()))
    first, second, third = receipts
    assert (first["version"], second["version"]) == ("1", "2") and not first["reused"]
    assert third["reused"] and third["artifact_uid"] == first["artifact_uid"]
    key = f"cellquery/{name}.h5ad"
    latest, latest_versions, versions, collection, members, latest_collections = ask_target(
        demo,
        f"key, collection = {key!r}, ln.Collection.get(key={collection_key(key)!r})\n"
        "answer = [ln.Artifact.get(key=key).uid, ln.Artifact.filter(key=key, is_latest=True).count(),"
        " ln.Artifact.filter(key=key).count(), collection.uid,"
        " [a.uid for a in collection.artifacts.all()],"
        f" ln.Collection.filter(key={collection_key(key)!r}, is_latest=True).count()]",
    )
    assert latest == first["artifact_uid"]  # what README's snippets return
    assert (latest_versions, versions) == (1, 2)
    assert collection == third["collection_uid"] == first["collection_uid"]
    assert members == [first["artifact_uid"]] and latest_collections == 1
