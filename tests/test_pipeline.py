"""The query pipeline end to end: the real `snakemake` on the demo, checked against the h5ads themselves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, ask_target, cell_organisms, registry_state, slices_of, snakemake

from cellquery.cellxgene import ontology
from cellquery.cellxgene.reference import REFERENCE
from cellquery.demo import catalog
from cellquery.demo.catalog import artifact_dataset_id
from cellquery.files.layout import slice_content
from cellquery.ingest.registry import COLLECTION_KEY
from cellquery.query.runfiles import read_manifest

QUERIES = REPO / "config" / "queries"


def run_query(project, spec_path, *extra, check=True):
    return snakemake(project, "--config", f"query={spec_path}", *extra, check=check)


def collection_h5ads(ln, version):
    collection = ln.Collection.get(key=COLLECTION_KEY, version_tag=version)
    for artifact in collection.artifacts.order_by("key"):
        yield artifact, ad.read_h5ad(artifact.cache())


def expected_cells(ln, version, organism, select) -> dict[str, ad.AnnData]:
    """Per dataset, the cells `select(obs)` picks, computed here from the source files alone."""
    picked = {}
    for artifact, adata in collection_h5ads(ln, version):
        genes = adata.raw.var["feature_reference"] == organism
        if not genes.any():  # another organism's file, or a xenograft's host cells (on the graft's genes)
            continue
        mask = select(adata.obs).to_numpy() & (cell_organisms(adata) == organism)
        if mask.any():
            picked[artifact_dataset_id(artifact)] = adata[mask]
    return picked


def check_result(project, name, expected: dict[str, ad.AnnData], genes=None):
    results = project / "results" / name
    result = ad.read_h5ad(results / f"{name}.h5ad")
    keys = set(result.obs["dataset_id"].astype(str) + ":" + result.obs["observation_joinid"].astype(str))
    wanted = {f"{d}:{j}" for d, a in expected.items() for j in a.obs["observation_joinid"]}
    assert keys == wanted and len(keys) == result.n_obs > 0
    for dataset_id, source in expected.items():
        mine = result[(result.obs["dataset_id"] == dataset_id).to_numpy()]
        order = pd.Index(mine.obs["observation_joinid"]).get_indexer(source.obs["observation_joinid"])
        columns = [
            g for g in (genes or source.raw.var_names) if g in source.raw.var_names and g in mine.var_names
        ]
        theirs = source.raw[:, columns].X
        assert (theirs != mine[order, columns].X).nnz == 0, dataset_id
        assert (mine.obs["cell_type"].to_numpy()[order] == source.obs["cell_type"].to_numpy()).all()
    report = json.loads((results / "validation.json").read_text())
    assert report["status"] == "passed"
    assert {d["dataset_id"] for d in report["per_dataset"] if d["h5ad_cells"]} == set(expected)
    return result, json.loads((results / "receipt.json").read_text())


def seed_guide_selection(cell_types: list[str], tissue: str, assay: str):
    """The seed guide's queries: cell types of one tissue, whole cells, one assay."""
    return lambda obs: (
        obs["cell_type"].isin(cell_types)
        & (obs["tissue"] == tissue)
        & (obs["suspension_type"] == "cell")
        & (obs["assay"] == assay)
    )


def test_kidney_query(demo, ln):
    run_query(demo.project, QUERIES / "kidney-immune.yaml")
    selection = seed_guide_selection(["dendritic cell", "neutrophil"], "kidney", "10x 3' v2")
    expected = expected_cells(ln, catalog.V2, catalog.HUMAN, selection)
    result, receipt = check_result(demo.project, "kidney-immune", expected)
    shared = set.intersection(*(set(a.raw.var_names) for a in expected.values()))
    assert set(result.var_names) == shared  # inner join on genes
    registered = ask_target(
        demo,
        f"a = ln.Artifact.get({receipt['artifact_uid']!r})\n"
        "inputs = {i.uid: [i.key, i.hash, str(i.path)] for i in a.run.input_artifacts.all()}\n"
        "cell_types = sorted(c.name for c in a.cell_types.all())\n"
        "answer = {'key': a.key, 'n_obs': a.n_observations, 'cell_types': cell_types, 'inputs': inputs,"
        " 'digest': a.run.params['spec_digest'], 'workflow': a.run.initiated_by_run is not None}",
    )
    assert registered["key"] == "cellquery/kidney-immune.h5ad" and registered["n_obs"] == result.n_obs
    assert registered["cell_types"] == ["dendritic cell", "neutrophil"]
    assert registered["digest"] == receipt["spec_digest"] and registered["workflow"]
    inputs = registered["inputs"]
    assert set(inputs) == set(receipt["inputs"]) and [f"cell-census/{catalog.V2}/soma"] == [
        key for key, _, _ in inputs.values() if key.endswith("/soma")
    ]
    for uid, (key, file_hash, path) in inputs.items():  # recorded zero-copy: the source's identity and file
        source = ln.Artifact.get(uid=uid)
        assert (key, file_hash, path) == (source.key, source.hash, str(source.path))
    read = receipt["bytes_read"]  # local files: read in place, their bytes not counted
    matched = len(read_manifest(demo.project / "results" / "kidney-immune" / "manifest.tsv"))
    assert read["h5ad_route"]["files_read_in_place"] + read["h5ad_route"]["slices_current"] == matched
    assert read["h5ad_route"]["downloaded"] == read["h5ad_route"]["streamed"] == 0 < read["census_route"]


def named_copy(spec_path, folder, name: str):
    """The spec under another name and output key (`folder/<name>.yaml`)."""
    data = yaml.safe_load(spec_path.read_text())
    output = data.get("output", {}) | {"key": f"cellquery/{name}.h5ad"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data | {"name": name, "output": output}))
    return path


def test_a_sampled_validation_reads_a_share_of_the_census_counts_for_the_same_result(demo, tmp_path):
    stamp = time.time_ns() % 10**8
    runs = {}
    for way, config in (("full", []), ("sampled", ["validation=sampled"])):
        name = f"kidney-{way}-{stamp}"
        run_query(demo.project, named_copy(QUERIES / "kidney-immune.yaml", tmp_path, name), *config)
        results = demo.project / "results" / name
        with h5py.File(results / "census.h5ad", "r") as census:
            values = len(census["X/data"])
        report = json.loads((results / "validation.json").read_text())
        runs[way] = (ad.read_h5ad(results / f"{name}.h5ad"), report, values)
    (full, full_report, full_values), (sampled, report, values) = runs["full"], runs["sampled"]
    totals = report["totals"]
    assert report["status"] == "passed" and report["validation"] == {"mode": "sampled", "fraction": 0.05}
    assert (
        totals["cells_totals_compared"] == totals["matched_cells"] == full_report["totals"]["matched_cells"]
    )
    assert 0 < totals["cells_compared_value_by_value"] < totals["matched_cells"]
    assert 0 < values < full_values  # whole bands of 2,048 cells (a row of X's tiles) drawn at 5%
    assert report["bytes_read"]["census_route"] < full_report["bytes_read"]["census_route"]
    pd.testing.assert_frame_equal(sampled.obs, full.obs)
    assert (sampled.X != full.X).nnz == 0 and full.n_obs > 0


def test_brain_query(demo, ln):
    run_query(demo.project, QUERIES / "brain-microglia.yaml")
    selection = seed_guide_selection(["microglial cell", "neuron"], "brain", "10x 3' v3")
    expected = expected_cells(ln, catalog.V1, catalog.HUMAN, selection)
    check_result(demo.project, "brain-microglia", expected)


def test_t_cell_query_uses_ontology_descendants_and_genes(demo, ln):
    run_query(demo.project, QUERIES / "t-cells.yaml")
    cl = ontology.ontology("CL")
    t_cells = {t for t, term in cl.items() if t == catalog.T_CELL or catalog.T_CELL in term["ancestors"]}
    expected = expected_cells(
        ln,
        catalog.V2,
        catalog.HUMAN,
        lambda obs: (
            obs["cell_type_ontology_term_id"].isin(t_cells)
            & obs["tissue"].isin(["blood", "spleen"])
            & (obs["disease"] != "COVID-19")
            & obs["is_primary_data"]
        ),
    )
    spec = yaml.safe_load((QUERIES / "t-cells.yaml").read_text())
    genes = pd.read_csv(REFERENCE / "genes_homo_sapiens.csv.gz", header=None, index_col=0)
    ids = [g if g.startswith("ENSG") else genes.index[genes[1] == g][0] for g in spec["genes"]]
    result, _ = check_result(demo.project, "t-cells", expected, genes=ids)
    measured = set().union(*(set(a.raw.var_names) for a in expected.values())) & set(ids)
    assert set(result.var_names) == measured == set(ids)  # outer join: every requested gene, each measured
    assert {c for c in result.obs["cell_type_ontology_term_id"]} >= {catalog.CD4_T, catalog.CD8_T}


def test_a_marmoset_spec_returns_the_marmoset_experiments_cells(demo, ln, tmp_path):
    """The third organism of 2025-11-08, named as a biologist would: its own genes, its own experiment."""
    spec = {
        "name": "marmoset-glia",
        "organism": "marmoset",
        "cells": {"cell_type": ["microglial cell", "astrocyte"], "tissue": "brain"},
        "genes": ["P2RY12", "CX3CR1", "GFAP", "AQP4"],
    }
    path = tmp_path / "marmoset-glia.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_query(demo.project, path)
    glia = lambda obs: obs["cell_type"].isin(spec["cells"]["cell_type"]) & (obs["tissue"] == "brain")  # noqa: E731
    expected = expected_cells(ln, catalog.V2, catalog.MARMOSET, glia)
    genes = pd.read_csv(REFERENCE / "genes_callithrix_jacchus.csv.gz", header=None, index_col=0)
    ids = [genes.index[genes[1] == g][0] for g in spec["genes"]]
    result, _ = check_result(demo.project, "marmoset-glia", expected, genes=ids)
    assert list(result.var_names) == ids and len(expected) == 1  # the genes in the order asked
    census = ad.read_h5ad(demo.project / "results" / "marmoset-glia" / "census.h5ad")  # its own experiment
    assert census.n_obs == result.n_obs and set(census.var_names) == set(ids)


@pytest.mark.parametrize("version", [catalog.V1, catalog.V2])
def test_cultured_cells_are_named_as_the_queried_release_names_them(demo, ln, tmp_path, version):
    """`cell culture` in 2025-01-30 (dataset schema 5.2), `primary cell culture` in 2025-11-08 (7.0): each
    accepted by its own release (the other's name is refused: tests/bad_specs/tissue-type-of-the-*). The
    cultured cells come from the h5ads alone: the Census leaves them out."""
    culture = {catalog.V1: "cell culture", catalog.V2: "primary cell culture"}[version]
    name = f"fibroblasts-{version}"
    spec = {
        "name": name,
        "source": {"version": version},
        "organism": "human",
        "cells": {"cell_type": "fibroblast", "tissue_type": ["tissue", culture]},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_query(demo.project, path)

    def fibroblasts(obs):
        return (obs["cell_type"] == "fibroblast") & obs["tissue_type"].isin(["tissue", culture])

    result, _ = check_result(demo.project, name, expected_cells(ln, version, catalog.HUMAN, fibroblasts))
    assert set(result.obs["tissue_type"].astype(str)) == {"tissue", culture}


def test_a_disease_matches_comorbid_donors_and_not_in_drops_them(demo, ln, tmp_path):
    """`disease: Alzheimer disease` takes the cells of donors with Alzheimer disease and another disease
    (`A || B`); `not_in: [chronic kidney disease]` drops those; on both routes (validation passes)."""
    brain = {"tissue": "brain", "cell_type": "microglial cell"}
    specs = {
        "ad-microglia": {**brain, "disease": "Alzheimer disease"},
        "microglia-without-ckd": {**brain, "disease": {"not_in": ["chronic kidney disease"]}},
    }
    for name, cells in specs.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump({"name": name, "organism": "human", "cells": cells, "genes": ["P2RY12"]})
        )
        run_query(demo.project, path)

    def microglia_with(obs, disease):
        terms = obs["disease"].astype(str).str.split(" || ", regex=False)
        return (
            (obs["tissue"] == "brain")
            & (obs["cell_type"] == "microglial cell")
            & terms.map(lambda t: disease in t)
        )

    with_ad = expected_cells(
        ln, catalog.V2, catalog.HUMAN, lambda obs: microglia_with(obs, "Alzheimer disease")
    )
    result, _ = check_result(demo.project, "ad-microglia", with_ad, genes=[])
    assert (result.obs["disease"].astype(str) == catalog_disease_label()).any()  # comorbid cells are in
    without = expected_cells(
        ln,
        catalog.V2,
        catalog.HUMAN,
        lambda obs: (
            (obs["tissue"] == "brain")
            & (obs["cell_type"] == "microglial cell")
            & ~microglia_with(obs, "chronic kidney disease")
        ),
    )
    result, _ = check_result(demo.project, "microglia-without-ckd", without, genes=[])
    assert not result.obs["disease"].astype(str).str.contains("chronic kidney disease").any()


def catalog_disease_label() -> str:
    return " || ".join(ontology.label(t) for t in catalog.ALZHEIMER_WITH_CKD.split(" || "))


def test_rerun_with_nothing_changed_does_nothing(demo):
    run_query(demo.project, QUERIES / "kidney-immune.yaml")  # built here when the test runs alone
    result = run_query(demo.project, QUERIES / "kidney-immune.yaml", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_version_switch_slices_the_new_release_and_keeps_the_old_slices(demo, tmp_path):
    specs, name = {}, f"kidney-versions-{time.time_ns() % 10**8}"  # fresh in a reused project too
    for version in (catalog.V1, catalog.V2):
        spec = {
            "name": name,
            "source": {"version": version},
            "organism": "Homo sapiens",
            "cells": {"tissue": "kidney"},
        }
        specs[version] = tmp_path / f"{version}.yaml"
        specs[version].write_text(yaml.safe_dump(spec))
    slices = slices_of(demo.project, specs[catalog.V1])  # both versions: the same cell criteria
    shutil.rmtree(slices, ignore_errors=True)  # shared with any kidney query run before
    run_query(demo.project, specs[catalog.V1])
    results = demo.project / "results" / name
    before = {p.name: p.stat().st_mtime_ns for p in slices.glob("*.h5ad")}
    first = json.loads((results / "receipt.json").read_text())
    v1_files = {
        f"{slice_content(row)}.h5ad" for row in read_manifest(results / "manifest.tsv").to_dict("records")
    }
    time.sleep(1)
    run_query(demo.project, specs[catalog.V2])
    after = {p.name: p.stat().st_mtime_ns for p in slices.glob("*.h5ad")}
    second = json.loads((results / "receipt.json").read_text())
    # slices are named by file content: the releases are of two dataset-schema generations, so every file of
    # the newer is another file (a dataset carried unchanged within a generation would keep its slice)
    v2_files = {
        f"{slice_content(row)}.h5ad" for row in read_manifest(results / "manifest.tsv").to_dict("records")
    }
    assert v2_files and not v1_files & v2_files
    assert all(name not in before for name in v2_files)
    assert all(after[name] == before[name] for name in v1_files)  # the older release's slices kept
    assert second["artifact_uid"] != first["artifact_uid"] and second["version"] == "2"
    key = f"cellquery/{name}.h5ad"
    versions, latest = ask_target(
        demo,
        f"versions = ln.Artifact.filter(key={key!r})\n"
        "answer = [versions.count(), versions.get(is_latest=True).uid]",
    )
    assert versions == 2 and latest == second["artifact_uid"]


def test_remote_instance_fails_at_once_with_a_clear_message(demo, tmp_path):
    spec = tmp_path / "remote.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "remote", "source": {"instance": "laminlabs/cellxgene"}, "organism": "human"})
    )
    home = {"HOME": str(tmp_path)}  # a remote instance is reached with the user's own ~/.lamin
    result = snakemake(demo.project, "--config", f"query={spec}", check=False, env=home)
    assert result.returncode != 0
    assert "cannot connect to 'laminlabs/cellxgene'" in result.stdout + result.stderr
    assert not (demo.project / "results" / "remote" / "manifest.tsv").exists()


@pytest.mark.parametrize("column", ["raw_sum", "nnz"])
def test_numeric_criteria_on_census_statistics(demo, ln, tmp_path, column):
    threshold = 1500 if column == "raw_sum" else 400
    spec = {
        "name": f"brain-{column}",
        "organism": "Homo sapiens",
        "cells": {"tissue": "brain", column: {"ge": threshold}},
        "output": {"gene_join": "outer"},  # each cell keeps all its genes, as the statistic counts them
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_query(demo.project, path)
    result = ad.read_h5ad(demo.project / "results" / spec["name"] / f"{spec['name']}.h5ad")
    counts = result[:, (result.var["feature_biotype"] == "gene").to_numpy()].X
    stat = np.asarray(counts.sum(axis=1)).ravel() if column == "raw_sum" else np.diff(counts.tocsr().indptr)
    assert result.n_obs > 0 and (stat >= threshold).all()


def test_disagreeing_routes_fail_validation_and_register_nothing(demo, tmp_path):
    name = f"kidney-tampered-{time.time_ns() % 10**8}"  # fresh in a reused project too
    spec = yaml.safe_load((QUERIES / "kidney-immune.yaml").read_text()) | {"name": name}
    path = tmp_path / "tampered.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = demo.project / "results" / name
    run_query(demo.project, path, "--", f"results/{name}/{name}.h5ad")  # the build up to assemble
    census_path = results / "census.h5ad"
    census = ad.read_h5ad(census_path)
    result_genes = ad.read_h5ad(results / f"{name}.h5ad", backed="r").var_names
    tampered = census[3:].copy()  # three cells dropped
    counts = tampered.X.tolil()  # anndata 0.12 holds only CSR or CSC in X
    counts[0, census.var_names.get_loc(result_genes[0])] += 7  # and one count altered
    tampered.X = counts.tocsr()
    tampered.write_h5ad(census_path)
    key = f"cellquery/{name}.h5ad"
    before = registry_state(demo, [key])["versions"][key]
    result = run_query(demo.project, path, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "the h5ad route and the census route disagree" in output
    assert "missing from census: 3 cells" in output and "raw counts: 1 cells" in output
    report = json.loads((results / "validation.json").read_text())
    assert report["status"] == "failed" and report["diff"]["missing_from_census"]["cells"] == 3
    assert not (results / "receipt.json").exists() and not (results / f"{name}.h5ad").exists()
    assert registry_state(demo, [key])["versions"][key] == before == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "selection",
    [
        {"artifacts": {"description_contains": "no-such-description"}},  # no artifact
        {"cells": {"tissue": "kidney", "cell_type": ["neutrophil"], "raw_sum": {"ge": 10**12}}},  # no cell
    ],
    ids=["no-artifact", "no-cell"],
)
def test_allow_empty_registers_an_empty_valid_result(demo, tmp_path, selection):
    name = f"empty-{len(selection.get('cells', {}))}-{time.time_ns() % 10**8}"
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump({"name": name, "organism": "human", "allow_empty": True, **selection}))
    run_query(demo.project, path)
    results = demo.project / "results" / name
    result = ad.read_h5ad(results / f"{name}.h5ad")
    receipt = json.loads((results / "receipt.json").read_text())
    report = json.loads((results / "validation.json").read_text())
    assert result.n_obs == receipt["n_obs"] == 0 and report["status"] == "passed"
    assert {"dataset_id", "observation_joinid", "cell_type"} <= set(result.obs.columns)
    key, has_inputs = ask_target(
        demo,
        f"a = ln.Artifact.get({receipt['artifact_uid']!r})\nanswer = [a.key, a.run.input_artifacts.exists()]",
    )
    assert key == f"cellquery/{name}.h5ad" and has_inputs


@pytest.mark.slow
def test_cultured_cells_with_allow_empty_come_from_the_h5ads_and_are_said_unchecked(demo, ln, tmp_path):
    """The Census leaves cultured cells out: with `allow_empty` the h5ad route delivers them (equal to the
    source files), and the summary says that the census route could check none of them."""
    name = f"cultured-{time.time_ns() % 10**8}"
    spec = tmp_path / f"{name}.yaml"
    cells = {"tissue_type": "primary cell culture"}
    spec.write_text(yaml.safe_dump({"name": name, "organism": "human", "cells": cells, "allow_empty": True}))
    run_query(demo.project, spec)
    select = lambda obs: obs["tissue_type"] == "primary cell culture"  # noqa: E731
    expected = expected_cells(ln, catalog.V2, catalog.HUMAN, select)
    check_result(demo.project, name, expected)
    cultured = sum(a.n_obs for a in expected.values())
    totals = json.loads((demo.project / "results" / name / "validation.json").read_text())["totals"]
    assert totals["census_cells"] == totals["h5ad_cells_census_rules"] == 0 < cultured == totals["h5ad_cells"]
    shown = subprocess.run(
        [sys.executable, "-m", "cellquery", "summary", str(spec)],
        cwd=demo.project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{cultured:,} cells outside the Census' inclusion rules come from the h5ads unchecked" in shown
