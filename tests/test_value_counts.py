"""What each value of a spec selects, told before any job: counts per value equal to the source files, and
the two silent losses a biologist met (a listed value the data hold only as descendants, a `not_in` value
whose cells carry a descendant) warned about by the spec check of the real snakemake, one line each."""

from __future__ import annotations

import subprocess
import uuid

import anndata as ad
import pytest
import yaml
from conftest import BIN, cell_organisms, clean_env, snakemake

from cellquery.demo import catalog
from cellquery.ingest.registry import COLLECTION_KEY
from cellquery.instances.source import source_for
from cellquery.query.resolve import plan_query
from cellquery.spec.query_spec import load_spec

LOSSES = {
    "blood-monocytes": (
        {"tissue": "blood", "cell_type": ["monocyte", "B cell"]},
        "cells.cell_type: 'monocyte' selects no cell while the other values select",
        "(classical monocyte ",
        "write {descendants_of: monocyte} to take them",
    ),
    "lung-without-cancer": (
        {"tissue": "lung", "disease": {"not_in": ["adenocarcinoma"]}},
        "cells.disease: not_in 'adenocarcinoma' excludes no cell, but the query keeps",
        "(lung adenocarcinoma ",
        "write {not_in: {descendants_of: adenocarcinoma}}",
    ),
}


def write_spec(folder, name: str, cells: dict):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "organism": "human", "cells": cells}))
    return path


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_spec_check_warns_of_a_loss_in_one_line_and_runs_nothing(demo, tmp_path, name):
    cells, *parts = LOSSES[name]
    fresh = f"{name}-{uuid.uuid4().hex[:6]}"
    result = snakemake(demo.project, "--dry-run", "--config", f"query={write_spec(tmp_path, fresh, cells)}")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("cellquery: warning:")]
    assert len(warnings) == 1 and all(part in warnings[0] for part in parts), result.stderr[-3000:]
    assert not (demo.project / "results" / fresh).exists()  # a dry run writes nothing, not even the check's


def test_a_gene_listed_twice_is_a_warning_line_each(demo, tmp_path):
    path = tmp_path / "genes-twice.yaml"
    spec = {"name": "genes-twice", "organism": "human", "cells": {"tissue": "blood"}}
    path.write_text(yaml.safe_dump(spec | {"genes": ["CD3E", "MS4A1", "CD3E", "ENSG00000156738"]}))
    result = snakemake(demo.project, "--dry-run", "--config", f"query={path}")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("cellquery: warning:")]
    assert warnings == [
        f"cellquery: warning: {path}: genes: 'CD3E' is listed more than once; the result holds it once",
        f"cellquery: warning: {path}: genes: 'MS4A1' and 'ENSG00000156738' name the same gene; the result "
        "holds it once",
    ], result.stderr[-3000:]


def test_counts_per_value_equal_the_source_files(demo, ln, tmp_path):
    """Cells and datasets per value of a listed criterion, as the Census of 2025-11-08 keeps them."""
    import bionty as bt

    listed = ["classical monocyte", "B cell", "T cell", "natural killer cell", "monocyte"]
    spec = load_spec(write_spec(tmp_path, "blood-counts", {"tissue": "blood", "cell_type": listed}))
    query, _ = plan_query(spec, source_for(spec, demo))
    (table,) = [t for t in query["value_counts"] if t["column"] == "cell_type_ontology_term_id"]
    counted = {bt.CellType.get(ontology_id=term).name: found for term, found in table["values"].items()}
    collection = ln.Collection.get(key=COLLECTION_KEY, version_tag=catalog.V2)
    expected = {name: {"cells": 0, "datasets": 0} for name in listed}
    for artifact in collection.artifacts.all():
        adata = ad.read_h5ad(artifact.cache(), backed="r")
        obs = adata.obs[(cell_organisms(adata) == catalog.HUMAN)]
        kept = obs[(obs["tissue"] == "blood") & obs["tissue_type"].isin(["tissue", "organoid"])]
        for name, cells in kept["cell_type"].astype(str).value_counts().items():
            if name in expected and cells:
                expected[name]["cells"] += int(cells)
                expected[name]["datasets"] += 1
    assert counted == expected and expected["monocyte"]["cells"] == 0 < expected["B cell"]["cells"]
    assert query["warnings"] and "'monocyte' selects no cell" in query["warnings"][0]


def test_the_explorer_counts_each_value_as_the_source_files_hold_it(demo, ln):
    """`python -m cellquery values cell_type --version 2025-01-30 tissue=kidney`: per value, the cells and
    datasets of the Census of 2025-01-30 (dataset schema 5.2: the organism per cell, a xenograft's host cells
    in no human count), from the project directory."""
    command = [
        str(BIN / "python"),
        "-m",
        "cellquery",
        "values",
        "cell_type",
        "--version",
        catalog.V1,
        "tissue=kidney",
    ]
    found = subprocess.run(command, capture_output=True, text=True, cwd=demo.project, env=clean_env())
    assert found.returncode == 0, found.stderr
    rows = [line.split(None, 2) for line in found.stdout.splitlines()[2:]]
    printed = {
        value.rsplit(" (", 1)[0]: (int(cells.replace(",", "")), int(datasets))
        for cells, datasets, value in rows
    }
    expected: dict[str, list] = {}
    collection = ln.Collection.get(key=COLLECTION_KEY, version_tag=catalog.V1)
    for artifact in collection.artifacts.all():
        adata = ad.read_h5ad(artifact.cache(), backed="r")
        if not (adata.var["feature_reference"] == catalog.HUMAN).any():
            continue
        obs = adata.obs[cell_organisms(adata) == catalog.HUMAN]
        kept = obs[(obs["tissue"] == "kidney") & (obs["tissue_type"] == "tissue")]
        for name, cells in kept["cell_type"].astype(str).value_counts().items():
            if cells:
                expected.setdefault(name, [0, 0])
                expected[name][0] += int(cells)
                expected[name][1] += 1
    assert printed == {name: tuple(counts) for name, counts in expected.items()}
    assert "macrophage" in printed  # the xenograft's human macrophages, not its host's


def test_the_explorer_reads_the_s3_demo_as_the_local_one(demo, s3_demo):
    """The same question of the demo laid out in a bucket (its census store read over S3) and of the local
    demo: the same answer, line for line."""
    question = ["-m", "cellquery", "values", "cell_type", "tissue=blood", "sex=female"]
    answers = [
        subprocess.run(
            [str(BIN / "python"), *question, "--demo-storage", storage],
            capture_output=True,
            text=True,
            cwd=project,
            env=clean_env(),
            check=True,
        ).stdout
        for project, storage in ((demo.project, "local"), (s3_demo.project, "s3"))
    ]
    assert answers[0] == answers[1] and len(answers[0].splitlines()) > 3
