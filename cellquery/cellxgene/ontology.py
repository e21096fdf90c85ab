"""Ontology terms of the CELLxGENE schema, read offline from `cellxgene-ontology-guide`."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import pandas as pd

# Ontology prefix -> (bionty registry name, bionty source name, organism of the source).
BIONTY_SOURCES = {
    "CL": ("CellType", "cl", "all"),
    "UBERON": ("Tissue", "uberon", "all"),
    "EFO": ("ExperimentalFactor", "efo", "all"),
    "MONDO": ("Disease", "mondo", "all"),
    "PATO": ("Phenotype", "pato", "all"),
    "HsapDv": ("DevelopmentalStage", "hsapdv", "human"),
    "MmusDv": ("DevelopmentalStage", "mmusdv", "mouse"),
    "HANCESTRO": ("Ethnicity", "hancestro", "human"),
}

# NCBITaxon is 1.2M terms (about 20 s to load): the organisms of the Census' experiments are spelled out
# (common names as lamindb's CELLxGENE schema names them).
ORGANISMS = {
    "NCBITaxon:9606": ("human", "Homo sapiens"),
    "NCBITaxon:10090": ("mouse", "Mus musculus"),
    "NCBITaxon:9483": ("white-tufted-ear marmoset", "Callithrix jacchus"),
    "NCBITaxon:9544": ("rhesus macaque", "Macaca mulatta"),
    "NCBITaxon:9598": ("chimpanzee", "Pan troglodytes"),
}
# What biologists also call them (a spec may say `marmoset`).
ORGANISM_ALIASES = {
    "NCBITaxon:9483": ("marmoset", "common marmoset"),
    "NCBITaxon:9544": ("macaque", "rhesus monkey"),
    "NCBITaxon:9598": ("chimp",),
}


@cache
def _schema():
    from cellxgene_ontology_guide.supported_versions import CXGSchema

    return CXGSchema()


@cache
def ontology(prefix: str) -> dict:
    """All terms of one ontology: `{term_id: {label, description, synonyms, ancestors}}`."""
    return _schema().ontology(prefix)


def ontology_version(prefix: str) -> str:
    """The ontology release the installed CELLxGENE schema uses."""
    return _schema().supported_ontologies[prefix]["version"]


def prefix_of(term_id: str) -> str:
    return term_id.split(":", 1)[0]


def label(term_id: str) -> str:
    """The label of an ontology term id, e.g. `CL:0000084` -> `T cell`."""
    if term_id in ORGANISMS:
        return ORGANISMS[term_id][1]
    return ontology(prefix_of(term_id))[term_id]["label"]


def with_ancestors(term_ids: Iterable[str]) -> set[str]:
    """The terms and all their ancestors within the same ontology."""
    closure = set()
    for term_id in term_ids:
        prefix = prefix_of(term_id)
        closure.add(term_id)
        ancestors = ontology(prefix)[term_id]["ancestors"]
        closure.update(a for a in ancestors if prefix_of(a) == prefix)
    return closure


def source_frame(term_ids: Iterable[str]) -> pd.DataFrame:
    """A bionty source table (ontology_id, name, definition, synonyms, parents) for terms of one ontology."""
    rows = []
    for term_id in sorted(term_ids):
        prefix = prefix_of(term_id)
        term = ontology(prefix)[term_id]
        parents = [a for a, d in term["ancestors"].items() if d == 1 and prefix_of(a) == prefix]
        rows.append(
            {
                "ontology_id": term_id,
                "name": term["label"],
                "definition": term.get("description"),
                "synonyms": "|".join(term.get("synonyms") or []) or None,
                "parents": parents,
            }
        )
    return pd.DataFrame(rows).set_index("ontology_id")


def prefixes_of(registry_name: str) -> list[str]:
    """The ontologies whose terms a bionty registry holds (DevelopmentalStage: one per organism)."""
    return [prefix for prefix, (name, _, _) in BIONTY_SOURCES.items() if name == registry_name]


@cache
def _by_name(prefix: str) -> dict[str, str]:
    """Lower-case labels and synonyms of an ontology's terms -> term id (a label wins over a synonym)."""
    terms = ontology(prefix)
    synonyms = {s.lower(): t for t, term in terms.items() for s in term.get("synonyms") or []}
    return synonyms | {term["label"].lower(): t for t, term in terms.items() if not term.get("deprecated")}


def named(name: str, prefixes: Iterable[str]) -> str | None:
    """The term of these ontologies a name is the label or a synonym of."""
    return next((found for p in prefixes if (found := _by_name(p).get(name.lower().strip()))), None)


@cache
def ancestors(term_id: str) -> dict[str, int]:
    """A term's ancestors within its ontology, with their distance from it (none for a term the installed
    ontology lacks: `na`, `unknown`, a newer release's)."""
    prefix = prefix_of(term_id)
    term = ontology(prefix).get(term_id) if prefix in BIONTY_SOURCES else None
    return {a: d for a, d in (term or {}).get("ancestors", {}).items() if prefix_of(a) == prefix}


GENERAL_TISSUE_COLUMNS = ("tissue_general_ontology_term_id", "tissue_general")  # the Census adds them


@cache
def _general_tissues() -> tuple:
    from cellxgene_ontology_guide import curated_ontology_term_lists
    from cellxgene_ontology_guide.entities import CuratedOntologyTermList
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

    terms = curated_ontology_term_lists.get_curated_ontology_term_list(CuratedOntologyTermList.TISSUE_GENERAL)
    return OntologyParser(), terms


def general_tissue(term_id: str) -> str:
    """A tissue's `tissue_general` term as the Census builder's `TissueMapper` finds it: the first of the
    curated high-level tissues that is the term or one of its ancestors; the term itself if none is (a
    cultured cell type)."""
    parser, terms = _general_tissues()
    try:
        return parser.get_high_level_terms(term_id, terms)[0]
    except (IndexError, KeyError, ValueError):
        return term_id


def with_general_tissue(obs: pd.DataFrame) -> pd.DataFrame:
    """`obs` with the Census' `tissue_general` columns, derived from `tissue_ontology_term_id`."""
    tissues = obs["tissue_ontology_term_id"].astype(str)
    general = {term: general_tissue(term) for term in tissues.unique()}
    ids = tissues.map(general)
    return obs.assign(
        tissue_general_ontology_term_id=pd.Categorical(ids),
        tissue_general=pd.Categorical(ids.map({term: label(term) for term in set(general.values())})),
    )
