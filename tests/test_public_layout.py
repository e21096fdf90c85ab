"""The demo laid out as the public instance: donors a plain string, a dataset the curator refused, datasets
without a registered cell count, artifacts named by their key's stem."""

from __future__ import annotations

import logging

import anndata as ad
import pandas as pd
from conftest import snakemake, spec_file

from cellquery.demo import catalog
from cellquery.files import h5ad
from cellquery.query.artifacts import with_census_datasets
from cellquery.query.runfiles import read_manifest

REFUSED, UNCOUNTED = "hs-kidney-immune-2", "hs-spleen-immune"  # curation failed; n_observations empty


def v2_spec(slug: str) -> catalog.DatasetSpec:
    return next(d for d in catalog.release("small", catalog.V2) if d.slug == slug)


def test_a_donor_criterion_selects_cells_of_a_refused_and_an_uncounted_dataset(demo, tmp_path):
    donors = [f"{REFUSED}-donor-1", f"{UNCOUNTED}-donor-2"]
    spec = spec_file(tmp_path, "donors", cells={"donor_id": donors}, genes=["PTPRC", "CD3E"])
    snakemake(demo.project, "--config", f"query={spec}")
    results = demo.project / "results" / "donors"
    expected = {}
    for slug in (REFUSED, UNCOUNTED):
        dataset = v2_spec(slug)
        assert not dataset.curated if slug == REFUSED else not dataset.listed
        obs = h5ad.read_frame(demo.storage / dataset.key(catalog.V2), "obs")
        expected[dataset.dataset_id] = set(obs.loc[obs["donor_id"].isin(donors), "observation_joinid"])
    result = ad.read_h5ad(results / "donors.h5ad")
    found = result.obs.groupby("dataset_id", observed=True)["observation_joinid"].agg(set).to_dict()
    assert found == expected and all(expected.values())
    manifest = read_manifest(results / "manifest.tsv").set_index("dataset_id")
    assert manifest.loc[v2_spec(UNCOUNTED).dataset_id, "n_obs"] == v2_spec(UNCOUNTED).n_cells  # the store's


def test_an_artifact_the_census_store_does_not_know_is_named(demo, caplog):
    known = v2_spec(UNCOUNTED)
    table = pd.DataFrame(
        {
            "key": [known.key(catalog.V2), "cell-census/2025-11-08/h5ads/not-in-census.h5ad"],
            "dataset_id": [known.dataset_id, "not-in-census"],
            "n_obs": [None, None],
        }
    )
    store = {"key": "cell-census/2025-11-08/soma", "path": str(demo.storage / "cell-census/2025-11-08/soma")}
    with caplog.at_level(logging.WARNING):
        checked = with_census_datasets(table, store)
    assert checked["n_obs"].tolist() == [known.n_cells, 0]
    assert "1 artifacts name datasets the census store" in caplog.text and "not-in-census.h5ad" in caplog.text
