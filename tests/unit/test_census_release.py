"""What a Census release is (`cellquery.cellxgene.release`): the table equals the builder's own lists per
release, a store is served by the generation its schema versions name, and the rules differ where the
builder's do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellquery.cellxgene.release import check_spec, release_for, release_of, releases
from cellquery.errors import SourceError, SpecError

BUILDER_LISTS = Path(__file__).parents[1] / "fixtures" / "census_builder"
HUMAN, MOUSE, CHIMPANZEE = "NCBITaxon:9606", "NCBITaxon:10090", "NCBITaxon:9598"
OLD_GENERATION, NEW_GENERATION = releases()
TENX_3V3, TENX_3V4, BD_RHAPSODY = "EFO:0009922", "EFO:0022604", "EFO:0700003"


@pytest.mark.parametrize("release", releases(), ids=lambda r: r.census_schema)
def test_each_release_holds_the_lists_of_the_builder_that_built_it(release):
    builder = json.loads((BUILDER_LISTS / f"{release.census_schema}.json").read_text())
    assert (builder["census_schema_version"], builder["cxg_schema_version"]) == (
        release.census_schema,
        release.dataset_schema,
    )
    assert release.builder_commit == builder["commit"]
    assert release.rna_assays == set(builder["rna_seq"])
    assert len(release.rna_assays) == len(builder["rna_seq"])  # no duplicate hidden by the set
    assert release.full_gene_assays == set(builder["full_gene_assay"])
    assert release.experiments == builder["organisms"]


def test_the_builders_lists_are_those_the_release_notes_state():
    assert [len(r.rna_assays) for r in releases()] == [106, 114]
    assert len(NEW_GENERATION.experiments) == 5
    assert "EFO:0008913" not in NEW_GENERATION.rna_assays | OLD_GENERATION.rna_assays
    assert {TENX_3V4, BD_RHAPSODY} <= NEW_GENERATION.rna_assays


def test_a_store_is_served_by_the_generation_its_schema_versions_name():
    assert release_of("2.4.0", "7.0.0") is NEW_GENERATION
    assert release_of("2.4.1", "7.0.1") is NEW_GENERATION  # a patch changes no rule
    assert release_of("2.1.0", "5.2.0") is OLD_GENERATION


@pytest.mark.parametrize(
    ("census", "dataset", "says"),
    [
        ("2.1.0", "5.1.0", "older than the oldest release cellquery serves (2025-01-30"),  # 2024-07-01
        ("1.3.0", "4.0.0", "older than the oldest release cellquery serves"),  # 2023-12-15
        ("2.5.0", "7.1.0", "newer than any cellquery knows"),
    ],
)
def test_a_release_cellquery_does_not_serve_is_refused_in_one_line(census, dataset, says):
    with pytest.raises(SourceError) as refused:
        release_of(census, dataset, "census store cell-census/x/soma")
    message = str(refused.value)
    assert says in message and message.startswith("census store cell-census/x/soma") and "\n" not in message


def test_a_store_is_built_at_the_generation_of_its_datasets_schema():
    assert release_for(["5.2.0", "5.2.0"], "x") is OLD_GENERATION
    assert release_for(["7.1.0", None], "x") is NEW_GENERATION  # a submission states none: the newest


@pytest.mark.parametrize("schemas", [["5.2.0", "7.0.0"], ["4.0.0"]])
def test_datasets_of_several_schemas_or_one_no_generation_is_built_from_are_refused(schemas):
    with pytest.raises(SourceError) as refused:
        release_for(schemas, "cell-census/2026-01-01/soma")
    message = str(refused.value)
    assert message.startswith("cell-census/2026-01-01/soma: its datasets are of CELLxGENE schema ")
    assert "5.2.0, 7.0.0" in message and "\n" not in message


def obs(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns).astype("category")


def test_schema_5_keeps_tissue_only_and_the_cells_of_the_experiments_organism():
    cells = obs(
        tissue_type=["tissue", "organoid", "cell culture", "tissue", "tissue"],
        assay_ontology_term_id=[TENX_3V3] * 5,
        organism_ontology_term_id=[HUMAN, HUMAN, HUMAN, MOUSE, HUMAN],
    )
    assert OLD_GENERATION.included_cells(cells, HUMAN).tolist() == [True, False, False, False, True]
    assert OLD_GENERATION.included_cells(cells, MOUSE).tolist() == [False, False, False, True, False]


def test_schema_7_keeps_tissue_and_organoid_and_the_newer_assays():
    cells = obs(
        tissue_type=["tissue", "organoid", "primary cell culture", "tissue"],
        assay_ontology_term_id=[TENX_3V4, BD_RHAPSODY, TENX_3V3, "EFO:0008913"],
    )
    assert NEW_GENERATION.included_cells(cells, HUMAN).tolist() == [True, True, False, False]
    old = cells.assign(organism_ontology_term_id=HUMAN, tissue_type="tissue")
    assert OLD_GENERATION.included_cells(old, HUMAN).tolist() == [False, True, True, False]  # no 10x 3' v4


def test_a_schema_5_file_with_several_organisms_on_both_axes_gives_no_cells():
    two = obs(tissue_type=["tissue", "tissue"], organism_ontology_term_id=[HUMAN, MOUSE])
    genes = pd.DataFrame({"feature_biotype": ["gene", "gene"], "feature_reference": [HUMAN, MOUSE]})
    human_genes = genes.assign(feature_reference=HUMAN)
    assert not OLD_GENERATION.file_holds({}, two, genes, HUMAN)
    assert OLD_GENERATION.file_holds({}, two, human_genes, HUMAN)  # the per-cell rule keeps its human cells
    assert NEW_GENERATION.file_holds({"organism_ontology_term_id": HUMAN}, two, genes, HUMAN)
    assert not NEW_GENERATION.file_holds({"organism_ontology_term_id": MOUSE}, two, genes, HUMAN)


def test_a_file_with_no_gene_of_the_organism_gives_it_no_cells():
    """As both builders: a file of human and mouse cells on human genes gives the mouse experiment nothing."""
    two = obs(tissue_type=["tissue", "tissue"], organism_ontology_term_id=[HUMAN, MOUSE])
    human_genes = pd.DataFrame({"feature_biotype": ["gene", "spike-in"], "feature_reference": [HUMAN, MOUSE]})
    assert OLD_GENERATION.file_holds({}, two, human_genes, HUMAN)
    assert not OLD_GENERATION.file_holds({}, two, human_genes, MOUSE)
    assert not NEW_GENERATION.file_holds({"organism_ontology_term_id": MOUSE}, two, human_genes, MOUSE)


def test_an_empty_slice_includes_nothing():
    assert OLD_GENERATION.included_cells(pd.DataFrame(), HUMAN).shape == (0,)
    assert np.array_equal(NEW_GENERATION.included_cells(pd.DataFrame(), HUMAN), np.zeros(0, dtype=bool))


STORE = "census store cell-census/x/soma"


def checked(release, organism, cells) -> None:
    check_spec(release, list(release.experiments), STORE, organism, cells)


def test_cultured_tissue_is_named_as_the_queried_release_names_it():
    checked(OLD_GENERATION, HUMAN, {"tissue_type": "cell culture"})
    checked(NEW_GENERATION, HUMAN, {"tissue_type": ["primary cell culture"]})
    with pytest.raises(
        SpecError, match=r"'cell culture' is dataset schema 5\.2\.0's name, this store's is 'primary"
    ):
        checked(NEW_GENERATION, HUMAN, {"tissue_type": "cell culture"})
    with pytest.raises(SpecError, match="this store's is 'cell culture'"):
        checked(OLD_GENERATION, HUMAN, {"tissue_type": {"not_in": ["primary cell culture"]}})


def test_an_organism_is_queried_in_the_releases_that_hold_its_experiment():
    assert NEW_GENERATION.experiment(CHIMPANZEE) == "pan_troglodytes"
    with pytest.raises(SpecError) as refused:
        checked(OLD_GENERATION, CHIMPANZEE, {})
    assert str(refused.value) == (
        f"organism: {STORE} holds no Pan troglodytes cells (Census schema 2.1.0 (dataset schema 5.2.0) has "
        "no experiment for them; it holds homo_sapiens, mus_musculus); Census 2025-11-08 and later hold them"
    )


def test_a_store_without_the_organisms_experiment_is_refused_naming_those_it_holds():
    with pytest.raises(SpecError) as refused:
        check_spec(NEW_GENERATION, ["homo_sapiens", "mus_musculus"], STORE, CHIMPANZEE, {})
    assert str(refused.value) == (
        f"organism: {STORE} holds no Pan troglodytes cells (no pan_troglodytes experiment; it holds "
        "homo_sapiens, mus_musculus)"
    )
