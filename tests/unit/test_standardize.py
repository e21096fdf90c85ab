"""Files as labs have them (`cellquery.ingest.standardize`): each made a CELLxGENE submission without a guess,
or refused in one line naming the file and the field."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import lab_file

from cellquery.ingest.standardize import LABELLED, StandardizeError, standardize

NAMES = list(LABELLED)


def refusal(path, tmp_path) -> list[str]:
    with pytest.raises(StandardizeError) as raised:
        standardize(path, tmp_path / "standard.h5ad")
    assert not (tmp_path / "standard.h5ad").exists()
    return raised.value.problems


def test_a_lab_file_is_standardized(tiny_h5ads, tmp_path):
    done = standardize(lab_file(tiny_h5ads[0][1], tmp_path), tmp_path / "standard.h5ad")
    standard = ad.read_h5ad(done.path)
    assert done.counts_from == "layers/counts" and done.organism == "NCBITaxon:9606"
    assert standard.var_names.str.startswith("ENSG").all() and done.genes == standard.n_vars > 0
    assert {f"{c}_ontology_term_id" for c in NAMES} <= set(standard.obs) and not set(NAMES) & set(
        standard.obs
    )
    assert standard.obs["cell_type_ontology_term_id"].str.startswith("CL:").all()
    assert standard.X.dtype == np.float32 and (standard.X.data == np.round(standard.X.data)).all()
    assert standard.uns["organism_ontology_term_id"] == "NCBITaxon:9606"


def test_whole_numbers_stored_as_floats_are_counts(tiny_h5ads, tmp_path):
    def counts_in_x(lab):
        lab.X = lab.layers.pop("counts")
        return lab

    done = standardize(lab_file(tiny_h5ads[0][1], tmp_path, counts_in_x), tmp_path / "standard.h5ad")
    assert done.counts_from == "X"


def test_counts_that_are_not_whole_numbers_are_refused(tiny_h5ads, tmp_path):
    def normalized_only(lab):
        del lab.layers["counts"]
        return lab

    [line] = refusal(lab_file(tiny_h5ads[0][1], tmp_path, normalized_only), tmp_path)
    assert line.startswith("lab.h5ad: X: ") and line.endswith(
        'is no count (raw counts are whole numbers; none found in raw.X, layers["counts"] or X): '
        "add the raw counts"
    )


def test_repeated_cell_ids_missing_fields_and_unknown_names_are_one_line_each(tiny_h5ads, tmp_path):
    def messy(lab):
        lab.obs_names = ["cell-1"] * 2 + list(lab.obs_names[2:])
        lab.obs = lab.obs.drop(columns=["donor_id"])
        lab.obs["cell_type"] = (
            lab.obs["cell_type"].astype(str).replace({lab.obs["cell_type"].iloc[0]: "T-cel"})
        )
        return lab

    assert refusal(lab_file(tiny_h5ads[0][1], tmp_path, messy), tmp_path) == [
        "lab.h5ad: obs: 1 cell id given to more than one cell (e.g. 'cell-1'); each cell needs its own",
        "lab.h5ad: obs.cell_type: 'T-cel' are no term names of CL; give cell_type_ontology_term_id",
        "lab.h5ad: obs: no donor_id (the schema asks it of every cell)",
    ]


def test_two_organisms_in_one_file_are_refused(tiny_h5ads, tmp_path):
    def two(lab):
        lab.obs["organism_ontology_term_id"] = ["NCBITaxon:9606"] * 100 + ["NCBITaxon:10090"] * (
            lab.n_obs - 100
        )
        return lab

    assert refusal(lab_file(tiny_h5ads[0][1], tmp_path, two), tmp_path) == [
        "lab.h5ad: obs.organism_ontology_term_id: 2 organisms (NCBITaxon:10090 in 300 cells, "
        "NCBITaxon:9606 in 100 cells); a dataset holds one: split the file"
    ]


def test_genes_of_another_organism_are_refused(tiny_h5ads, tmp_path):
    def mouse(lab):
        lab.uns["organism_ontology_term_id"] = "NCBITaxon:10090"
        return lab

    [line] = refusal(lab_file(tiny_h5ads[0][1], tmp_path, mouse), tmp_path)
    assert line.startswith("lab.h5ad: var: ") and "gene names are no genes of Mus musculus" in line


def test_an_empty_file_and_a_file_that_is_no_h5ad_are_refused(tiny_h5ads, tmp_path):
    empty = lab_file(tiny_h5ads[0][1], tmp_path, lambda lab: lab[:0].copy(), name="empty.h5ad")
    assert refusal(empty, tmp_path) == ["empty.h5ad: holds no cells"]
    text = tmp_path / "notes.h5ad"
    text.write_text("cell_type,count\nT cell,3\n")
    assert refusal(text, tmp_path) == ["notes.h5ad: not an h5ad (not an HDF5 file)"]
    nothing = tmp_path / "nothing.h5ad"
    nothing.write_bytes(b"")
    assert refusal(nothing, tmp_path) == ["nothing.h5ad: not an h5ad (an empty file)"]
