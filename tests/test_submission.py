"""A cellquery result of two demo datasets, converted to CELLxGENE submission format and checked by the
official validator's Python API (tests/test_outputs.py runs its CLI on a built result); the unconverted
result must be refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellquery.cellxgene.release import release_named
from cellquery.demo import catalog, synth
from cellquery.outputs.submission import (
    REQUIRED_OBS,
    embedding,
    reserved,
    to_submission,
    validate_submission,
    write_submission,
)
from cellquery.spec.genes import SPIKE_INS, gene_table

OLDER = release_named(catalog.V1)  # dataset schema 5.2.0

SLUGS = ("hs-liver", "hs-lung-smartseq2")  # human 10x 3' v2, and Smart-seq2 with ERCC spike-ins
PROVENANCE = {
    "query": {"name": "liver-lung", "organism": catalog.HUMAN, "genes": ["CD3E", "PTPRC"]},
    "datasets": {slug: {"n_cells": 150, "columns": ["donor_id", "author_cell_type"]} for slug in SLUGS},
    "census_version": "2025-11-08",
    "n_cells": 300,
}


def _part(spec: catalog.DatasetSpec) -> ad.AnnData:
    """One dataset as a cellquery slice: raw counts in X, key columns, labels and author columns."""
    source = synth.make_anndata(replace(spec, n_cells=150), seed=0)
    obs = source.obs.copy()
    obs.insert(0, "dataset_id", spec.dataset_id)
    obs.index = pd.Index((spec.dataset_id + ":" + obs["observation_joinid"].astype(str)).to_numpy())
    return ad.AnnData(X=source.raw.X.astype(np.float32), obs=obs, var=source.raw.var.copy())


def make_result(slugs=SLUGS, version=catalog.V2) -> ad.AnnData:
    specs = {s.slug: s for s in catalog.release("small", version) if s.revision == 1}
    parts = [_part(specs[slug]) for slug in slugs]
    result = ad.concat(parts, join="outer")  # genes one dataset lacks are zero for its cells
    result.X = sp.csr_matrix(result.X, dtype=np.float32)
    var = pd.concat([p.var.astype(object) for p in parts])
    result.var = var[~var.index.duplicated()].loc[result.var_names].astype({"feature_length": int})
    result.obs["dataset_id"] = result.obs["dataset_id"].astype("category")
    result.uns["cellquery"] = PROVENANCE
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("submission")
    result = make_result()
    assert "author_cell_type" in result.obs and result.obs["library_id"].isna().any()  # 10x only
    assert result.var["feature_reference"].eq(SPIKE_INS).any()
    paths = {"result": root / "result.h5ad", "submission": root / "submission.h5ad"}
    result.write_h5ad(paths["result"])
    title = "Liver and lung cells"
    write_submission(paths["result"], paths["submission"], title=title, organism=catalog.HUMAN)
    return paths


def test_submission_is_valid(files: dict[str, Path]) -> None:
    assert validate_submission(files["submission"]) == []


def test_unconverted_result_is_refused(files: dict[str, Path]) -> None:
    errors = validate_submission(files["result"])
    assert any("'observation_joinid' is a reserved column name" in e for e in errors), errors
    assert any("'embedding" in e.lower() or "obsm" in e for e in errors), errors


def test_cells_counts_and_provenance_survive(files: dict[str, Path]) -> None:
    result, sub = ad.read_h5ad(files["result"]), ad.read_h5ad(files["submission"])
    assert sub.obs_names.equals(result.obs_names) and sub.var_names.equals(result.var_names)
    assert sub.X.dtype == np.float32 and sp.isspmatrix_csr(sub.X)
    assert (sub.X != result.X).nnz == 0
    assert sub.uns["cellquery"]["query"]["name"] == "liver-lung"
    assert list(sub.uns["cellquery"]["query"]["genes"]) == ["CD3E", "PTPRC"]
    assert sorted(sub.uns["cellquery"]["datasets"]) == sorted(SLUGS)
    assert sub.uns["default_embedding"] == "X_pca" and sub.obsm["X_pca"].shape == (300, 50)
    assert sub.obs["dataset_id"].nunique() == 2 and "author_cell_type" in sub.obs
    assert set(REQUIRED_OBS) <= set(sub.obs) and sub.obs["is_primary_data"].dtype == bool
    assert not (reserved("obs") & set(sub.obs)) and not (reserved("var") & set(sub.var))
    assert not (reserved("uns") & set(sub.uns)) and not sub.var["feature_is_filtered"].any()


def test_refuses_what_the_schema_cannot_hold() -> None:
    result = make_result()
    with pytest.raises(ValueError, match="no cells"):
        to_submission(result[:0].copy(), title="t", organism=catalog.HUMAN)
    with pytest.raises(ValueError, match="donor_id"):
        to_submission(_without(result, "donor_id"), title="t", organism=catalog.HUMAN)
    twice = ad.concat([result[:3], result[:3]], index_unique="-")
    with pytest.raises(ValueError, match="same counts"):
        to_submission(twice, title="t", organism=catalog.HUMAN)


def _without(adata: ad.AnnData, column: str) -> ad.AnnData:
    out = adata.copy()
    del out.obs[column]
    return out


def test_write_failure_leaves_no_file(tmp_path: Path) -> None:
    result = make_result()[:0].copy()
    result.write_h5ad(tmp_path / "empty.h5ad")
    with pytest.raises(ValueError):
        write_submission(tmp_path / "empty.h5ad", tmp_path / "out.h5ad", title="t", organism=catalog.HUMAN)
    assert not list(tmp_path.glob("*out.h5ad"))
    assert validate_submission(tmp_path / "empty.h5ad")  # the validator itself fails on an empty file


@pytest.mark.parametrize("shape", [(1, 40), (2, 40), (40, 1), (40, 2), (3, 3), (40, 5)])
def test_embedding_of_tiny_results(shape: tuple[int, int]) -> None:
    counts = sp.csr_matrix(np.arange(1, shape[0] * shape[1] + 1, dtype=np.float32).reshape(shape))
    first, again = embedding(counts), embedding(counts)
    assert first.shape == (shape[0], max(2, min(50, shape[0] - 1, shape[1] - 1)))
    assert first.dtype == np.float32
    assert np.isfinite(first).all() and np.array_equal(first, again)


def test_a_result_of_schema_5_files_is_migrated_to_the_schema_written(tmp_path: Path) -> None:
    """Census 2025-01-30's files (dataset schema 5.2): a donor's ethnicities joined by a comma, `cell
    culture`, a gene of GENCODE 44 that GENCODE 48 lacks. Its submission is valid in 7.1, the rest as it
    was."""
    result = make_result(("hs-lung-atlas", "hs-mm-xenograft"), catalog.V1)
    result = result[(result.obs["organism_ontology_term_id"] == catalog.HUMAN).to_numpy()].copy()
    ethnicity = result.obs["self_reported_ethnicity_ontology_term_id"].astype(str)
    assert ethnicity.str.contains(",").any() and (result.obs["tissue_type"] == "cell culture").any()
    older = gene_table(catalog.HUMAN, "5").index.difference(gene_table(catalog.HUMAN).index)[0]
    result.var_names = [older, *result.var_names[1:]]
    result.write_h5ad(tmp_path / "result.h5ad")
    out = tmp_path / "submission.h5ad"
    title, human = "Lung and graft cells", catalog.HUMAN
    changes = write_submission(tmp_path / "result.h5ad", out, title=title, organism=human, release=OLDER)
    assert validate_submission(out) == []
    sub = ad.read_h5ad(out)
    assert older not in sub.var_names and sub.n_vars == result.n_vars - 1 and sub.n_obs == result.n_obs
    joined = sub.obs["self_reported_ethnicity_ontology_term_id"].astype(str)
    assert set(joined[ethnicity.str.contains(",").to_numpy()]) == {"HANCESTRO:0019 || HANCESTRO:0021"}
    assert set(sub.obs["tissue_type"].astype(str)) == {"tissue", "primary cell culture"}
    assert len(changes) == 3 and older in changes[-1]
