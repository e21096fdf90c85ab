"""`tissue_general` as the Census builder derives it, for tissues below the curated high-level ones."""

from __future__ import annotations

import pandas as pd
import pytest

from cellquery.cellxgene.ontology import with_general_tissue

CASES = {
    "UBERON:0001950": ("UBERON:0000955", "brain"),  # neocortex
    "UBERON:0002116": ("UBERON:0002108", "small intestine"),  # ileum
    "UBERON:0001157": ("UBERON:0001155", "colon"),  # transverse colon
    "UBERON:0002113": ("UBERON:0002113", "kidney"),  # a high-level tissue is its own
    "CL:0000057": ("CL:0000057", "fibroblast"),  # cultured cells: the cell type, as the builder leaves it
}


@pytest.mark.parametrize("tissue", CASES)
def test_a_tissue_maps_to_its_first_curated_high_level_tissue(tissue):
    obs = with_general_tissue(pd.DataFrame({"tissue_ontology_term_id": [tissue, tissue]}))
    assert set(zip(obs["tissue_general_ontology_term_id"], obs["tissue_general"], strict=True)) == {
        CASES[tissue]
    }
