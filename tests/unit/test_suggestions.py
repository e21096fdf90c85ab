"""Suggestions for a misspelt name: one typing slip first (swapped neighbours, a wrong, missing or extra
character), so that a gene panel's typo finds the gene meant."""

from __future__ import annotations

import pytest

from cellquery.errors import SpecError
from cellquery.spec.genes import resolve_genes
from cellquery.spec.query_spec import one_slip

HUMAN = "NCBITaxon:9606"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("SFTCP", "SFTPC"), ("PTRPC", "PTPRC"), ("CD3EE", "CD3E"), ("GZMKK", "GZMK"), ("NKG77", "NKG7")],
)
def test_a_gene_one_slip_away_is_suggested(typed, meant):
    with pytest.raises(SpecError, match=f"did you mean '{meant}'"):
        resolve_genes([typed], HUMAN)


def test_the_likeliest_slip_wins():
    known = {"sftpc", "sftpd", "sftp"}
    assert one_slip("sftcp", known) == "sftpc"  # swapped, before one wrong character (sftpd)
    assert one_slip("sftpx", known) in {"sftpc", "sftpd"}  # one wrong character
    assert one_slip("zzzz", known) is None
