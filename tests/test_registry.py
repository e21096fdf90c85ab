"""The demo instance as the public cellxgene instance has it, and the seed guide's queries against it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cellquery.cellxgene import ontology
from cellquery.demo import catalog
from cellquery.files import h5ad
from cellquery.ingest.registry import COLLECTION_KEY
from cellquery.spec.query_spec import terms
from cellquery.store.experiment import LABELLED_TERMS

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
    return ln.Artifact.filter(suffix=".h5ad", key__startswith="cell-census/")


def terms_of_files(demo) -> set[str]:
    """Every ontology term the demo's files hold (a multi-valued column's split)."""
    found = set()
    for path in (demo.root / "h5ad").glob("shard-*/*.h5ad"):
        obs = h5ad.read_frame(path, "obs")
        for column in LABELLED_TERMS:
            values = obs[f"{column}_ontology_term_id"].astype(str).unique()
            found |= {term for value in values for term in terms(value)}
    return found


def test_ontology_hierarchy_works_offline(bt, demo):
    children = {c.name for c in bt.CellType.get(name="T cell").query_children()}
    assert {"CD4-positive, alpha-beta T cell", "CD8-positive, alpha-beta T cell"} <= children
    descendants = {c.ontology_id for c in bt.CellType.get(name="B cell").query_children()}
    assert catalog.NAIVE_B in descendants
    for term in terms_of_files(demo) - {"na", "unknown"}:
        registry = getattr(bt, ontology.BIONTY_SOURCES[ontology.prefix_of(term)][0])
        record = registry.get(ontology_id=term)
        parents = {p.ontology_id for p in record.parents.all()}
        expected = {
            a for a, d in ontology.ontology(ontology.prefix_of(term))[term]["ancestors"].items() if d == 1
        }
        assert parents == {p for p in expected if ontology.prefix_of(p) == ontology.prefix_of(term)}


def registered_specs(h5ads) -> list[tuple]:
    """(artifact, its dataset spec) per registered h5ad: the release from `version_tag`, the dataset from
    the key's stem."""
    specs = {(v, d.dataset_id): d for v in (catalog.V1, catalog.V2) for d in catalog.release("small", v)}
    return [(a, specs[a.version_tag, catalog.artifact_dataset_id(a)]) for a in h5ads]


def test_artifacts_are_laid_out_as_the_public_instance(ln, demo, h5ads):
    pairs = registered_specs(h5ads)
    assert len(pairs) == sum(len(catalog.release("small", v)) for v in (catalog.V1, catalog.V2))
    for artifact, spec in pairs:
        assert artifact.key == spec.key(artifact.version_tag) and artifact.description == spec.title
        assert Path(artifact.path) == demo.storage / artifact.key  # registered in place
        assert artifact._hash_type == "md5"  # lamindb's hash of a local file under 50 MB
        assert artifact.n_observations == (spec.n_cells if spec.listed else None)
    assert not ln.Feature.filter(name="dataset_id").exists()
    assert not ln.ULabel.filter(name="Donor", is_type=True).exists()
    assert ln.Feature.get(name="donor_id").dtype_as_str == "str"


def test_a_release_revises_the_one_before(h5ads):
    in_first = {d.dataset_id: d for d in catalog.release("small", catalog.V1)}
    carried = 0
    for artifact, spec in registered_specs(h5ads.filter(version_tag=catalog.V2)):
        earlier = [v for v in artifact.versions.all() if v != artifact]
        assert artifact.is_latest and all(not v.is_latest for v in earlier)
        assert [v.key for v in earlier] == ([spec.key(catalog.V1)] if spec.dataset_id in in_first else [])
        before = in_first.get(spec.dataset_id)
        if before is not None and before.revision == spec.revision:
            # carried over, migrated to the newer dataset schema: another file of the same cells
            carried += 1
            older, newer = (h5ad.read_frame(a.cache(), "obs") for a in (earlier[0], artifact))
            assert artifact.hash != earlier[0].hash
            assert list(older["observation_joinid"]) == list(newer["observation_joinid"])
            schemas = [h5ad.read_uns(a.cache())["schema_version"] for a in (earlier[0], artifact)]
            assert schemas == [catalog.DATASET_SCHEMA[catalog.V1], catalog.DATASET_SCHEMA[catalog.V2]]
    assert carried >= 10


def test_every_curated_artifact_is_annotated_from_its_own_obs(ln, h5ads):
    for artifact, spec in registered_specs(h5ads):
        if not spec.curated:
            continue
        obs = h5ad.read_frame(artifact.cache(), "obs")
        for link, column in LINKS.items():
            linked = {r.ontology_id for r in getattr(artifact, link).all()}
            assert linked == set(obs[column].astype(str)), (artifact.key, link)
        tissues = {r.ontology_id for r in artifact.tissues.all()}
        assert tissues == set(obs.loc[obs["tissue_type"] == "tissue", "tissue_ontology_term_id"].astype(str))
        ethnicities = {r.ontology_id for r in artifact.ethnicities.all()}
        assert ethnicities == set(obs["self_reported_ethnicity_ontology_term_id"].astype(str))
        labels = {(u.type.name, u.name) for u in artifact.ulabels.all()}
        assert {("SuspensionType", s) for s in obs["suspension_type"].astype(str)} <= labels
        uns = h5ad.read_uns(artifact.cache())  # schema 7: the organism per file; schema 5: per cell
        cells = obs.get("organism_ontology_term_id")
        organisms = {uns["organism_ontology_term_id"]} if cells is None else set(cells.astype(str))
        assert {o.ontology_id for o in artifact.organisms.all()} == organisms, artifact.key


def test_refused_datasets_carry_no_labels_but_the_census_holds_their_cells(ln, demo, h5ads):
    from cellquery.query.census_route import open_store

    refused = [(a, s) for a, s in registered_specs(h5ads) if not s.curated]
    # forced; ERCC spike-ins; joined diseases (schema 7); joined ethnicities (schema 5)
    slugs = {"hs-kidney-immune-2", "hs-lung-smartseq2", "hs-brain-comorbid", "hs-mm-xenograft"}
    assert {s.slug for _, s in refused} == slugs
    for artifact, _ in refused:
        links = [*LINKS, "tissues", "organisms", "ulabels"]
        assert not any(getattr(artifact, link).exists() for link in links), artifact.key
    for version in (catalog.V1, catalog.V2):
        with open_store({"path": str(demo.storage / f"cell-census/{version}/soma")}) as census:
            datasets = census["census_info"]["datasets"].read().concat().to_pandas()
        cells = datasets.set_index("dataset_id")["dataset_total_cell_count"]
        held = [catalog.artifact_dataset_id(a) for a, _ in refused if a.version_tag == version]
        assert held and all(cells[dataset_id] > 0 for dataset_id in held)


def test_artifacts_have_two_creators(ln, h5ads):
    handles = {a.created_by.handle for a in h5ads}
    assert handles == set(catalog.CURATORS)
    for handle in handles:
        user = ln.User.get(handle=handle)
        mine = h5ads.filter(created_by=user)
        assert 0 < mine.count() < h5ads.count()


def test_collection_versions(ln):
    first = ln.Collection.get(key=COLLECTION_KEY, version_tag=catalog.V1)
    second = ln.Collection.get(key=COLLECTION_KEY, version_tag=catalog.V2)
    assert {c.version_tag for c in second.versions} == {catalog.V1, catalog.V2}
    assert second.is_latest and not first.is_latest
    assert ln.Collection.get(key=COLLECTION_KEY) == second
    keys_first = {a.key for a in first.artifacts.all()}
    keys_second = {a.key for a in second.artifacts.all()}
    assert len(keys_second - keys_first) >= 2
    assert not keys_first & keys_second  # each release's own keys
    assert all(a.version_tag == catalog.V2 and a.is_latest for a in second.artifacts.all())
    assert all(a.version_tag == catalog.V1 for a in first.artifacts.all())


def test_seed_guide_artifact_queries(ln, bt, h5ads):
    immune = h5ads.filter(description__contains="immune")
    releases = [d for v in (catalog.V1, catalog.V2) for d in catalog.release("small", v)]
    assert immune.count() == sum("immune" in d.description.lower() for d in releases)
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
    assert "dataset_id" not in artifact.features.get_values()  # the key's stem is the dataset id


def test_seed_guide_data_access(ln, h5ads):
    listed = h5ads.filter(n_observations__isnull=False)
    artifact = listed.filter(cell_types__name="dendritic cell").distinct().first()
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
    collection = ln.Collection.get(key=COLLECTION_KEY)
    human = bt.Organism.get(name="human")
    kidney = bt.Tissue.get(name="kidney")
    cell = ln.ULabel.get(name="cell", type__name="SuspensionType")
    assay = bt.ExperimentalFactor.get(name="10x 3' v2")
    cell_types = bt.CellType.filter(name__in=["dendritic cell", "neutrophil"])
    hits = collection.artifacts.filter(
        organisms=human, cell_types__in=cell_types, tissues=kidney, ulabels=cell, experimental_factors=assay
    ).distinct()
    expected = {
        d.key(catalog.V2)
        for d in catalog.datasets("small")
        if catalog.V2 in d.versions
        and d.organism == catalog.HUMAN
        and d.tissue == catalog.KIDNEY
        and d.suspension_type == "cell"
        and d.assay == catalog.TENX_3V2
        and {catalog.DENDRITIC, catalog.NEUTROPHIL} & set(d.cell_types)
        and d.curated  # a refused dataset carries no labels to filter on
    }
    # the second kidney cohort matches too, but its curation failed: no labels for these filters to find
    refused = {d.key(catalog.V2) for d in catalog.datasets("small") if d.curation_fails}
    assert {a.key for a in hits} == expected and len(expected) == 1 and not refused & expected
    t_cells = bt.CellType.get(name="T cell").query_children()
    assert collection.artifacts.filter(cell_types__in=t_cells).distinct().count() > 0


def test_mapped_collection_serves_cells(ln):
    collection = ln.Collection.get(key=COLLECTION_KEY, version_tag=catalog.V1)
    with collection.mapped(obs_keys=["cell_type"], join="outer") as mapped:
        assert len(mapped) == sum(len(h5ad.read_frame(a.cache(), "obs")) for a in collection.artifacts.all())
        item = mapped[0]
        assert "cell_type" in item and item["X"].ndim == 1


def test_cultured_cells_are_queried_by_the_cell_type_they_name_as_their_tissue(ln, tmp_path):
    """CELLxGENE's "primary cell culture" names a cell type as the tissue: the demo's cultured fibroblasts."""
    from cellquery.errors import SpecError
    from cellquery.spec.criteria import resolve
    from cellquery.spec.query_spec import QuerySpec

    def tissue(value):
        data = {"name": "cultured", "organism": "human", "cells": {"tissue": value}}
        (criterion,) = resolve(QuerySpec(tmp_path / "cultured.yaml", data))
        return criterion.values

    assert tissue("fibroblast") == tissue(catalog.FIBROBLAST) == (catalog.FIBROBLAST,)
    assert tissue(["kidney", "fibroblast"]) == (catalog.KIDNEY, catalog.FIBROBLAST)
    with pytest.raises(
        SpecError, match=re.escape("unknown name 'fibroblst'; did you mean 'fibroblast' (CL:0000057)")
    ):
        tissue("fibroblst")
