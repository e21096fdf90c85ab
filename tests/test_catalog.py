"""The demo's declared content at each scale, and deterministic generation (no instance needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cellquery.cellxgene import ontology
from cellquery.demo import catalog, synth


def latest(scale: str) -> list[catalog.DatasetSpec]:
    return [d for d in catalog.datasets(scale) if catalog.V2 in d.versions]


def test_small_scale_has_what_queries_need():
    specs = catalog.datasets("small")
    current = latest("small")
    assert len(current) >= 12
    assert 30_000 <= sum(d.n_cells for d in current) <= 80_000
    assert {d.organism for d in current} == {catalog.HUMAN, catalog.MOUSE, catalog.MARMOSET}  # 3 experiments
    assert len({d.tissue for d in specs}) >= 5
    cell_types = {t for d in specs for t in d.cell_types}
    assert len(cell_types) >= 12
    for parent, child in [
        (catalog.T_CELL, catalog.CD4_T),
        (catalog.T_CELL, catalog.CD8_T),
        (catalog.B_CELL, catalog.NAIVE_B),
    ]:
        assert {parent, child} <= cell_types
        assert parent in ontology.ontology("CL")[child]["ancestors"]
    assert {catalog.TENX_3V2, catalog.TENX_3V3, catalog.TENX_3V4, catalog.TENX_5V1, catalog.SMART_SEQ2} <= {
        d.assay for d in specs
    }
    assert {d.suspension_type for d in specs} == {"cell", "nucleus"}
    diseases = {t for d in specs for t in d.diseases}
    assert catalog.ALZHEIMER_WITH_CKD in diseases  # a comorbid donor group, as schema 7 writes it
    assert catalog.NORMAL in diseases and len(diseases - {catalog.NORMAL}) >= 2
    assert any(not d.primary for d in specs)
    assert any(d.culture_fraction for d in specs)
    assert len({d.panel for d in specs}) >= 2
    assert any("immune" in d.description for d in specs)
    assert len(set(catalog.CURATORS)) == 2 == len({d.curator for d in specs})


def test_second_collection_version_adds_datasets_and_a_new_version():
    specs = catalog.datasets("small")
    first = {d.dataset_id for d in catalog.release("small", catalog.V1)}
    second = {d.dataset_id for d in catalog.release("small", catalog.V2)}
    assert len(second - first) >= 2
    revised = [d for d in specs if d.revision > 1 and catalog.V2 in d.versions]
    assert revised and all(d.dataset_id in first for d in revised)
    assert {d.key(catalog.V2) for d in revised} == {
        f"cell-census/{catalog.V2}/h5ads/{d.dataset_id}.h5ad" for d in revised
    }


def test_some_datasets_unlisted_and_one_refused_by_the_curator():
    specs = catalog.datasets("small")
    assert sum(not d.listed for d in specs) >= 2
    assert [d.slug for d in specs if d.curation_fails] == ["hs-kidney-immune-2"]
    # forced, spike-ins, joined diseases (schema 7), joined ethnicities (schema 5)
    refused = {"hs-kidney-immune-2", "hs-lung-smartseq2", "hs-brain-comorbid", "hs-mm-xenograft"}
    assert {d.slug for d in specs if not d.curated} == refused


def test_bench_and_registry_scales():
    bench = latest("bench")
    assert len(bench) >= 24
    assert sum(d.n_cells for d in bench) >= 500_000
    assert max(d.n_cells for d in bench) >= 200_000
    registry = catalog.datasets("registry")
    assert len({d.dataset_id for d in registry}) >= 2000
    assert len(catalog.generation_batches("registry")) < len(registry) / 100  # tiny files share jobs


def test_unknown_scale_is_named():
    with pytest.raises(ValueError, match="unknown demo scale 'huge'"):
        catalog.datasets("huge")


def test_generation_is_deterministic_and_seeded():
    spec = replace(catalog.datasets("registry")[0], n_cells=120)
    first, again, other = (synth.make_anndata(spec, seed) for seed in (0, 0, 1))
    assert first.obs.equals(again.obs) and first.var.equals(again.var)
    assert (first.raw.X != again.raw.X).nnz == 0
    assert (first.raw.X != other.raw.X).nnz > 0


def test_counts_are_integer_overdispersed_and_cell_type_specific():
    spec = catalog.datasets("small")[0]
    adata = synth.make_anndata(replace(spec, n_cells=1500), seed=0)
    counts = adata.raw.X
    assert np.all(counts.data == np.round(counts.data)) and counts.data.min() > 0
    library = np.asarray(counts.sum(axis=1)).ravel()
    assert library.std() / library.mean() > 0.3  # library sizes vary per cell
    dense = counts.toarray()
    mean, var = dense.mean(axis=0), dense.var(axis=0)
    expressed = mean > 1
    assert np.median(var[expressed] / mean[expressed]) > 1.5  # over-dispersed, not Poisson
    profiles = {
        cell_type: dense[(adata.obs["cell_type_ontology_term_id"] == cell_type).to_numpy()].mean(axis=0)
        for cell_type in adata.obs["cell_type_ontology_term_id"].cat.categories
    }
    tops = {cell_type: set(np.argsort(profile)[-20:]) for cell_type, profile in profiles.items()}
    assert len({frozenset(top) for top in tops.values()}) == len(tops)  # each type has its own top genes


def test_each_release_holds_its_datasets_in_its_own_dataset_schema():
    """2025-01-30's files in schema 5.2, 2025-11-08's in 7.0; a dataset of both is two files of the same
    content; what a schema cannot hold is refused."""
    specs = catalog.datasets("small")
    for version, schema in catalog.DATASET_SCHEMA.items():
        assert {d.schema for d in catalog.release("small", version)} == {schema}
    carried = [d for d in specs if d.versions == (catalog.V1,) and d.schema.startswith("5.")]
    assert any(d.host for d in carried)  # the xenograft: human and mouse cells
    by_content = {}
    for spec in specs:
        by_content.setdefault(spec.content_stem, set()).add(spec.file_stem)
    assert sum(len(stems) == 2 for stems in by_content.values()) >= 10
    comorbid = next(d for d in specs if d.comorbid)
    xenograft = next(d for d in specs if d.host)
    with pytest.raises(ValueError, match=r"5\.2\.0 cannot hold"):
        catalog.by_generation(replace(comorbid, versions=(catalog.V1,)))
    with pytest.raises(ValueError, match=r"7\.0\.0 cannot hold"):
        catalog.by_generation(replace(xenograft, versions=(catalog.V2,)))


# (higher in, than in): well-known contrasts of blood a biologist checks first
MARKER_DIRECTIONS = {
    "CD14": (catalog.MONOCYTE, catalog.NK_CELL),
    "LYZ": (catalog.MONOCYTE, catalog.T_CELL),
    "FCGR3A": (catalog.NK_CELL, catalog.MONOCYTE),
    "NKG7": (catalog.NK_CELL, catalog.B_CELL),
    "CD3E": (catalog.T_CELL, catalog.B_CELL),
    "MS4A1": (catalog.B_CELL, catalog.T_CELL),
    "CD79A": (catalog.B_CELL, catalog.MONOCYTE),
}


@pytest.mark.parametrize("gene", sorted(MARKER_DIRECTIONS))
def test_the_demos_blood_expresses_markers_the_way_blood_does(gene):
    """Mean raw counts per cell of each marker: higher in the cell type that marks it than in the other."""
    spec = next(d for d in catalog.release("small", catalog.V2) if d.slug == "hs-blood-pbmc")
    adata = synth.make_anndata(replace(spec, n_cells=3000), seed=0)
    symbols = adata.raw.var["feature_name"].astype(str)
    counts = np.asarray(adata.raw.X[:, np.flatnonzero(symbols == gene)[0]].todense()).ravel()
    cell_types = adata.obs["cell_type_ontology_term_id"].astype(str).to_numpy()
    high, low = MARKER_DIRECTIONS[gene]
    assert counts[cell_types == high].mean() > 3 * counts[cell_types == low].mean()
