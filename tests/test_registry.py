"""The demo instance as the public cellxgene instance has it, and the seed guide's queries against it."""

from __future__ import annotations

import numpy as np
import pytest

from cellquery import h5ad, ontology
from cellquery.demo import catalog

LINKS = {
    "cell_types": "cell_type_ontology_term_id",
    "experimental_factors": "assay_ontology_term_id",
    "diseases": "disease_ontology_term_id",
    "phenotypes": "sex_ontology_term_id",
    "developmental_stages": "development_stage_ontology_term_id",
}


@pytest.fixture(scope="module")
def bt(ln):
    import bionty

    return bionty


@pytest.fixture(scope="module")
def h5ads(ln):
    """The demo's datasets (query results registered by other tests are h5ads too)."""
    return ln.Artifact.filter(suffix=".h5ad", key__startswith="cellxgene/")


def test_ontology_hierarchy_works_offline(bt):
    children = {c.name for c in bt.CellType.get(name="T cell").query_children()}
    assert {"CD4-positive, alpha-beta T cell", "CD8-positive, alpha-beta T cell"} <= children
    descendants = {c.ontology_id for c in bt.CellType.get(name="B cell").query_children()}
    assert catalog.NAIVE_B in descendants
    for term in catalog.all_terms("small") - {"na"}:
        registry = getattr(bt, ontology.BIONTY_SOURCES[ontology.prefix_of(term)][0])
        record = registry.get(ontology_id=term)
        parents = {p.ontology_id for p in record.parents.all()}
        expected = {
            a for a, d in ontology.ontology(ontology.prefix_of(term))[term]["ancestors"].items() if d == 1
        }
        assert parents == {p for p in expected if ontology.prefix_of(p) == ontology.prefix_of(term)}


def test_every_artifact_is_annotated_from_its_own_obs(ln, h5ads):
    specs = catalog.datasets("small")
    assert h5ads.count() == len(specs)
    for artifact in h5ads:
        obs = h5ad.read_frame(artifact.cache(), "obs")
        assert artifact.n_observations == len(obs) and artifact.description and artifact.version_tag
        for link, column in LINKS.items():
            linked = {r.ontology_id for r in getattr(artifact, link).all()}
            assert linked == set(obs[column].astype(str)), (artifact.key, link)
        tissues = {r.ontology_id for r in artifact.tissues.all()}
        assert tissues == set(obs.loc[obs["tissue_type"] == "tissue", "tissue_ontology_term_id"].astype(str))
        ethnicities = {r.ontology_id for r in artifact.ethnicities.all()}
        assert ethnicities == set(obs["self_reported_ethnicity_ontology_term_id"].astype(str))
        labels = {(u.type.name, u.name) for u in artifact.ulabels.all()}
        assert {("SuspensionType", s) for s in obs["suspension_type"].astype(str)} <= labels
        assert {("Donor", d) for d in obs["donor_id"].astype(str)} <= labels
        organism = h5ad.read_uns(artifact.cache())["organism_ontology_term_id"]
        assert [o.ontology_id for o in artifact.organisms.all()] == [organism]
        values = artifact.features.get_values()
        spec = next(d for d in specs if d.key == artifact.key and str(d.revision) == artifact.version_tag)
        assert values["dataset_version_id"] == spec.dataset_version_id and values["schema_version"] == "7.1.0"


def test_artifacts_have_two_creators(ln, h5ads):
    handles = {a.created_by.handle for a in h5ads}
    assert handles == set(catalog.CURATORS)
    for handle in handles:
        user = ln.User.get(handle=handle)
        mine = h5ads.filter(created_by=user)
        assert 0 < mine.count() < h5ads.count()


def test_collection_versions(ln):
    first = ln.Collection.get(key=catalog.COLLECTION_KEY, version_tag=catalog.V1)
    second = ln.Collection.get(key=catalog.COLLECTION_KEY, version_tag=catalog.V2)
    assert {c.version_tag for c in second.versions} == {catalog.V1, catalog.V2}
    assert second.is_latest and not first.is_latest
    assert ln.Collection.get(key=catalog.COLLECTION_KEY) == second
    keys_first = {a.key for a in first.artifacts.all()}
    keys_second = {a.key for a in second.artifacts.all()}
    assert len(keys_second - keys_first) >= 2
    changed = [a for a in second.artifacts.all() if a.key in keys_first and a not in first.artifacts.all()]
    assert changed and all(a.version_tag == "2" and a.is_latest for a in changed)
    assert all(not v.is_latest for a in changed for v in a.versions.all() if v != a)


def test_seed_guide_artifact_queries(ln, bt, h5ads):
    immune = h5ads.filter(description__contains="immune")
    assert immune.count() == sum("immune" in d.description.lower() for d in catalog.datasets("small"))
    sizes = sorted(a.size for a in h5ads)
    big = h5ads.filter(size__gt=sizes[len(sizes) // 2])
    assert big.count() == sum(s > sizes[len(sizes) // 2] for s in sizes)
    names = ["dendritic cell", "neutrophil"]
    with_types = h5ads.filter(cell_types__name__in=names).distinct()
    expected = {a.uid for a in h5ads if {c.name for c in a.cell_types.all()} & set(names)}
    assert {a.uid for a in with_types} == expected and expected
    ordered = h5ads.order_by("-size")
    assert [a.size for a in ordered] == sorted(sizes, reverse=True)
    table = h5ads.to_dataframe(include=["cell_types__name", "created_by__handle"], limit=None)
    assert len(table) == h5ads.count() and "cell_types__name" in table.columns
    artifact = ordered.first()
    artifact.describe()
    assert "dataset_id" in artifact.features.get_values()


def test_seed_guide_data_access(ln, h5ads):
    artifact = h5ads.filter(cell_types__name="dendritic cell").distinct().first()
    path = artifact.cache()
    adata = artifact.load()
    assert adata.n_obs == artifact.n_observations
    access = artifact.open()
    mask = (access.obs["cell_type"] == "dendritic cell").to_numpy()
    subset = access[np.asarray(mask)].to_memory()
    assert subset.n_obs == int((adata.obs["cell_type"] == "dendritic cell").sum()) > 0
    assert subset.obs_names.equals(adata.obs_names[mask])
    assert str(path).endswith(".h5ad")


def test_seed_guide_collection_filters(ln, bt):
    collection = ln.Collection.get(key=catalog.COLLECTION_KEY)
    human = bt.Organism.get(name="human")
    kidney = bt.Tissue.get(name="kidney")
    cell = ln.ULabel.get(name="cell", type__name="SuspensionType")
    assay = bt.ExperimentalFactor.get(name="10x 3' v2")
    cell_types = bt.CellType.filter(name__in=["dendritic cell", "neutrophil"])
    hits = collection.artifacts.filter(
        organisms=human, cell_types__in=cell_types, tissues=kidney, ulabels=cell, experimental_factors=assay
    ).distinct()
    expected = {
        d.key
        for d in catalog.datasets("small")
        if catalog.V2 in d.versions
        and d.organism == catalog.HUMAN
        and d.tissue == catalog.KIDNEY
        and d.suspension_type == "cell"
        and d.assay == catalog.TENX_3V2
        and {catalog.DENDRITIC, catalog.NEUTROPHIL} & set(d.cell_types)
    }
    assert {a.key for a in hits} == expected and len(expected) >= 2
    t_cells = bt.CellType.get(name="T cell").query_children()
    assert collection.artifacts.filter(cell_types__in=t_cells).distinct().count() > 0


def test_mapped_collection_serves_cells(ln):
    collection = ln.Collection.get(key=catalog.COLLECTION_KEY, version_tag=catalog.V1)
    with collection.mapped(obs_keys=["cell_type"], join="outer") as mapped:
        assert len(mapped) == sum(a.n_observations for a in collection.artifacts.all())
        item = mapped[0]
        assert "cell_type" in item and item["X"].ndim == 1


def test_cultured_cells_are_queried_by_the_cell_type_they_name_as_their_tissue(ln, tmp_path):
    """CELLxGENE's "primary cell culture" names a cell type as the tissue: the demo's cultured fibroblasts."""
    from cellquery.criteria import resolve
    from cellquery.errors import SpecError
    from cellquery.spec import QuerySpec

    def tissue(value):
        data = {"name": "cultured", "organism": "human", "cells": {"tissue": value}}
        (criterion,) = resolve(QuerySpec(tmp_path / "cultured.yaml", data))
        return criterion.values

    assert tissue("fibroblast") == tissue(catalog.FIBROBLAST) == (catalog.FIBROBLAST,)
    assert tissue(["kidney", "fibroblast"]) == (catalog.KIDNEY, catalog.FIBROBLAST)
    with pytest.raises(SpecError, match="unknown name 'fibroblst'; did you mean 'fibroblast'"):
        tissue("fibroblst")
