"""What a result carries away from the registry, end to end through the real snakemake on the demo:
provenance in the file, the Census' normalized counts, zarr and Parquet exports, the authors' own obs
columns, samples, the CELLxGENE schema and highly variable genes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ask_target, snakemake, spec_file

from cellquery.cellxgene.release import releases
from cellquery.cellxgene.validator import validator_cli
from cellquery.files import h5ad
from cellquery.files.layout import QueryFiles
from cellquery.query.validate import NORMALIZED_RTOL

LUNG_IMMUNE = {"tissue": "lung", "cell_type": ["alveolar macrophage", "dendritic cell"]}


def build(project, spec_path, *extra) -> QueryFiles:
    snakemake(project, "--config", f"query={spec_path}", *extra)
    return QueryFiles(spec_path.stem)


def validation(project, files: QueryFiles) -> dict:
    report = json.loads((project / files.validation).read_text())
    assert report["status"] == "passed", report
    return report


def provenance_text(path, cwd) -> str:
    command = [sys.executable, "-m", "cellquery", "provenance", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=True, cwd=cwd).stdout


@pytest.fixture(scope="module")
def lung(demo, tmp_path_factory):
    """Lung immune cells of a 10x and a Smart-seq2 dataset, normalized, in three formats, an author column."""
    folder = tmp_path_factory.mktemp("specs")
    spec = spec_file(
        folder,
        "lung-takeaway",
        cells=LUNG_IMMUNE,
        obs_columns=[
            *["cell_type", "assay", "assay_ontology_term_id", "donor_id", "author_cell_type"],
            *["tissue_general", "tissue_general_ontology_term_id"],
        ],
        output={"layers": ["normalized"], "formats": ["zarr", "obs_parquet"]},
    )
    files = build(demo.project, spec)
    return demo.project, files, spec


def test_tissue_general_is_the_census_builders_on_both_routes(lung):
    """The h5ads do not hold `tissue_general`: the h5ad route derives it as the Census builder does (the
    first of its curated high-level tissues among the tissue and its ancestors), and validation compares
    it with the census route's, cell by cell."""
    from cellxgene_ontology_guide import curated_ontology_term_lists
    from cellxgene_ontology_guide.entities import CuratedOntologyTermList
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

    project, files, _ = lung
    assert "tissue_general" not in validation(project, files)["not_compared"]
    columns = ["dataset_id", "observation_joinid", "tissue_general", "tissue_general_ontology_term_id"]
    routes = [
        h5ad.read_frame(project / path, "obs")[columns].astype(str) for path in (files.result, files.census)
    ]
    ours, census = (frame.sort_values(columns[:2]).reset_index(drop=True) for frame in routes)
    pd.testing.assert_frame_equal(ours, census)
    parser = OntologyParser()
    curated = curated_ontology_term_lists.get_curated_ontology_term_list(
        CuratedOntologyTermList.TISSUE_GENERAL
    )
    for general, label in set(
        zip(ours["tissue_general_ontology_term_id"], ours["tissue_general"], strict=True)
    ):
        assert general in curated and label == parser.get_term_label(general)


def test_a_copied_result_tells_where_it_came_from(lung, tmp_path):
    project, files, spec = lung
    manifest = pd.read_csv(project / files.manifest, sep="\t")
    elsewhere = tmp_path / "shared-with-a-colleague.h5ad"
    shutil.copy(project / files.result, elsewhere)
    text = provenance_text(elsewhere, tmp_path)
    assert "query lung-takeaway" in text and "h5ad route" in text
    query = json.loads((project / files.query).read_text())
    assert query["spec_digest"] in text and f"{query['collection']['version']}" in text
    for row in manifest.itertuples():
        assert f"{row.dataset_id}: artifact {row.uid} version {row.version} hash {row.hash}" in text
    assert "cell_type:" in text and "alveolar macrophage" in text  # the spec, as written
    assert f"anndata {metadata.version('anndata')}" in text and "built 20" in text
    census_story = h5ad.read_uns(project / files.census)["cellquery"]
    assert census_story["route"] == "census"
    assert yaml.safe_load(census_story["spec"]) == yaml.safe_load(spec.read_text())  # the same spec


def test_normalized_counts_equal_the_census_store_including_smart_seq2(lung):
    import cellxgene_census

    project, files, _ = lung
    report = validation(project, files)
    assert report["totals"]["layers_compared"] == {"normalized": f"within a relative {NORMALIZED_RTOL:g}"}
    result = ad.read_h5ad(project / files.result)
    query = json.loads((project / files.query).read_text())
    with cellxgene_census.open_soma(uri=query["census"]["path"]) as census:  # read here, not by cellquery
        store = cellxgene_census.get_anndata(
            census,
            organism="Homo sapiens",
            obs_value_filter=f"dataset_id in {sorted(set(result.obs['dataset_id'].astype(str)))!r}",
            X_name="normalized",
        )
    store.obs_names = store.obs["dataset_id"].astype(str) + ":" + store.obs["observation_joinid"].astype(str)
    store.var_names = store.var["feature_id"].astype(str)
    theirs = store[result.obs_names, result.var_names]
    ours = result.layers["normalized"].toarray()
    expected = theirs.X.toarray()
    assert ((ours != 0) == (expected != 0)).all()
    assert np.allclose(ours, expected, rtol=NORMALIZED_RTOL, atol=0)
    counts, raw_sum = result.X.toarray(), theirs.obs["raw_sum"].to_numpy()[:, None]
    plain = counts / raw_sum  # each row divided by its sum, without the feature-length step
    full_gene = (
        result.obs["assay_ontology_term_id"].astype(str).isin(releases()[-1].full_gene_assays).to_numpy()
    )
    assert full_gene.any() and (~full_gene).any()
    assert np.allclose(ours[~full_gene], plain[~full_gene], rtol=NORMALIZED_RTOL, atol=0)
    assert not np.allclose(ours[full_gene], plain[full_gene], rtol=0.01, atol=0)


def test_zarr_and_parquet_equal_the_h5ad_and_are_registered_with_it(demo, lung, tmp_path):
    project, files, _ = lung
    result = ad.read_h5ad(project / files.result)
    store = ad.read_zarr(project / files.export("zarr"))
    pd.testing.assert_frame_equal(store.obs, result.obs)
    pd.testing.assert_frame_equal(store.var, result.var)
    for name in ("X", "normalized"):
        ours, theirs = (store.X, result.X) if name == "X" else (store.layers[name], result.layers[name])
        assert ours.shape == theirs.shape and (ours != theirs).nnz == 0
    assert store.uns["cellquery"]["spec_digest"] == result.uns["cellquery"]["spec_digest"]
    table = pq.read_table(project / files.export("obs_parquet"))
    obs = table.to_pandas().set_index("obs_names").rename_axis(None)
    pd.testing.assert_frame_equal(obs, result.obs)
    copied = tmp_path / "obs.parquet"
    shutil.copy(project / files.export("obs_parquet"), copied)
    assert "query lung-takeaway" in provenance_text(copied, tmp_path)
    receipt = json.loads((project / files.receipt).read_text())
    exports = {fmt: receipt["exports"][fmt]["uid"] for fmt in ("zarr", "obs_parquet")}
    found = ask_target(
        demo,
        f"run = ln.Artifact.get(uid={receipt['artifact_uid']!r}).run_id\n"
        f"answer = {{fmt: (ln.Artifact.get(uid=uid).run_id == run, ln.Artifact.get(uid=uid).key)"
        f" for fmt, uid in {exports!r}.items()}}",
    )
    assert found == {fmt: [True, receipt["exports"][fmt]["key"]] for fmt in exports}
    stored = ask_target(demo, f"answer = ln.Artifact.get(uid={exports['zarr']!r}).path.as_posix()")
    for zarr_store in (project / files.export("zarr"), Path(stored)):  # nothing but the store in either
        assert not list(zarr_store.rglob(".snakemake*")) and (zarr_store / ".zgroup").is_file()


def test_author_columns_come_from_the_source_h5ads(lung):
    project, files, _ = lung
    report = validation(project, files)
    assert "author_cell_type" in report["not_compared"]
    result = ad.read_h5ad(project / files.result)
    assert "author_cell_type" not in ad.read_h5ad(project / files.census).obs
    manifest = pd.read_csv(project / files.manifest, sep="\t")
    contributing = manifest[manifest["selected_cells"] > 0]  # not the matched datasets without cells
    assert len(contributing) >= 2
    for row in contributing.itertuples():
        source = h5ad.read_frame(row.path, "obs").set_index("observation_joinid")
        mine = result.obs[result.obs["dataset_id"].astype(str) == row.dataset_id]
        expected = source.loc[mine["observation_joinid"], "author_cell_type"].astype(str).to_numpy()
        assert len(mine) and (mine["author_cell_type"].astype(str).to_numpy() == expected).all()


def test_a_sample_is_the_same_in_both_routes_and_in_every_rerun(demo, tmp_path):
    """At most 30 cells per cell type, of 90%: fibroblasts include cultured cells the Census leaves out."""
    project = demo.project
    cells = {"cell_type": ["fibroblast", "alveolar macrophage", "B cell"]}
    sample = {"max_cells": 30, "per": ["cell_type"], "fraction": 0.9, "seed": 7}
    columns = ["cell_type", "tissue_type", "donor_id"]
    spec = spec_file(tmp_path, "sampled-corpus", cells=cells, sample=sample, obs_columns=columns)
    shown = snakemake(project, "plan", "--config", f"query={spec}")  # before any h5ad is read
    files = QueryFiles(spec.stem)
    plan = pd.read_csv(project / files.plan, sep="\t")
    assert "after sample" in shown.stdout + shown.stderr and plan["sampled_cells"].sum() == 90
    build(project, spec)
    report = validation(project, files)  # the routes drew the same cells
    first = ad.read_h5ad(project / files.result).obs
    drawn = first["dataset_id"].astype(str).value_counts().reindex(plan["dataset_id"], fill_value=0)
    assert (drawn.to_numpy() == plan["sampled_cells"].to_numpy()).all()
    assert first["cell_type"].value_counts().to_dict() == {
        t: 30 for t in ("fibroblast", "alveolar macrophage", "B cell")
    }
    assert report["totals"]["census_cells"] == len(first) and report["sample"] == sample
    assert (first["tissue_type"] == "tissue").all()  # the cells the Census holds rank first
    manifest = pd.read_csv(project / files.manifest, sep="\t")
    sources = pd.concat(h5ad.read_frame(path, "obs") for path in manifest["path"])
    cultured = (sources["cell_type"] == "fibroblast") & (sources["tissue_type"] == "primary cell culture")
    assert cultured.sum() > 30  # the h5ad route drew from them too
    build(project, spec, "--forcerun", "resolve")  # every step again
    assert ad.read_h5ad(project / files.result).obs.index.equals(first.index)  # a rerun: the same cells
    reseeded = spec_file(
        tmp_path, "sampled-corpus", cells=cells, sample=sample | {"seed": 8}, obs_columns=columns
    )
    build(project, reseeded)
    validation(project, files)
    other = ad.read_h5ad(project / files.result).obs
    assert len(other) == len(first) and len(other.index.intersection(first.index)) < len(first) // 2


def test_a_schema_result_passes_cellxgene_schema_validate_with_its_variable_genes(demo, tmp_path):
    import scanpy as sc

    project = demo.project
    output = {
        "schema": "cellxgene",
        "hvg": {"n_top": 300, "batch_key": "dataset_id"},
        "layers": ["normalized"],
    }
    spec = spec_file(tmp_path, "kidney-curated", cells={"tissue": "kidney"}, output=output)
    files = build(project, spec)
    report = validation(project, files)
    assert report["hvg"]["flagged"] == 300 and report["schema"]["title"].startswith(
        "cellquery kidney-curated"
    )
    checked = subprocess.run(
        [str(validator_cli()), "validate", str(project / files.result)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = ad.read_h5ad(project / files.result)
    assert "cellquery" in result.uns and "normalized" in result.layers
    by_hand = ad.AnnData(X=result.X.copy(), obs=result.obs[["dataset_id"]].copy(), var=result.var[[]].copy())
    sc.pp.highly_variable_genes(by_hand, flavor="seurat_v3", n_top_genes=300, batch_key="dataset_id")
    assert (by_hand.var["highly_variable"] == result.var["highly_variable"]).all()
    assert np.allclose(by_hand.var["variances_norm"], result.var["variances_norm"])
