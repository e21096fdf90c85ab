"""A spec's genes resolve in the gene reference of the release it queries: GENCODE 44 / M33 for the dataset
schema 5.2 files of Census 2025-01-30, GENCODE 48 / M37 for the 7.0 files of 2025-11-08."""

from __future__ import annotations

import pytest

from cellquery.errors import SpecError
from cellquery.spec.genes import gene_table, resolve_genes, schema_major

HUMAN, MARMOSET = "NCBITaxon:9606", "NCBITaxon:9483"
OLDER, NEWER = "5.2.0", "7.0.0"


def only_in(schema: str, other: str) -> tuple[str, str]:
    """A human gene (id, symbol) of one schema's reference whose symbol the other's lacks."""
    table = gene_table(HUMAN, schema_major(schema))
    names = set(gene_table(HUMAN, schema_major(other))["feature_name"])
    gene = next(
        g for g, name in table["feature_name"].items() if name not in names and not name.startswith("ENSG")
    )
    return gene, table.loc[gene, "feature_name"]


@pytest.mark.parametrize(("queried", "other"), [(OLDER, NEWER), (NEWER, OLDER)])
def test_a_gene_of_the_queried_generation_resolves_and_one_of_the_other_is_named(queried, other):
    gene, symbol = only_in(queried, other)
    assert resolve_genes([symbol, gene], HUMAN, queried) == [gene]
    _, elsewhere_symbol = only_in(other, queried)
    with pytest.raises(SpecError, match=f"'{elsewhere_symbol}' is a human gene of GENCODE") as refused:
        resolve_genes(["CD3E", elsewhere_symbol], HUMAN, queried)
    assert f"the reference of the census store queried (dataset schema {queried[0]})" in str(refused.value)


def test_a_gene_symbol_both_generations_hold_may_name_other_ids():
    """PAXX: ENSG00000148362 in GENCODE 44, ENSG00000310560 in GENCODE 48."""
    assert resolve_genes(["PAXX"], HUMAN, OLDER) != resolve_genes(["PAXX"], HUMAN, NEWER)


def test_an_organism_the_older_generation_lacks_resolves_in_the_newest_reference():
    """Marmoset has no schema 5.2 reference (and no cells in 2025-01-30: the organism check says so)."""
    assert resolve_genes(["ENSCJAG00000000010"], MARMOSET, OLDER) == ["ENSCJAG00000000010"]
