"""Build the demo LaminDB instance: bionty ontologies offline, curated h5ad artifacts, collections."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from cellquery import ontology
from cellquery.demo.catalog import COLLECTION_KEY, CURATORS, DatasetSpec, all_terms
from cellquery.lamin import DemoInstance, connect, use_demo_settings

log = logging.getLogger(__name__)

SCHEMA_NAME = "cellquery CELLxGENE AnnData"
ULABEL_TYPES = {
    "SuspensionType": ("cell", "nucleus", "na"),
    "TissueType": ("tissue", "organoid", "primary cell culture", "cell line"),
    "Donor": (),
}
# Not the title: lamindb 2.12 reads a str feature value holding ", " back as a set of parts.
DATASET_FEATURES = {"dataset_id": str, "dataset_version_id": str, "schema_version": str, "n_donors": int}


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
    for name, dtype in DATASET_FEATURES.items():
        ln.Feature(name=name, dtype=dtype).save()


def curation_schema(ln):
    """The AnnData schema the curator validates obs against (ontology ids, donors, suspension types)."""
    import bionty as bt

    existing = ln.Schema.filter(name=SCHEMA_NAME).one_or_none()
    if existing is not None:
        return existing
    label_type = {name: ln.ULabel.get(name=name, is_type=True) for name in ULABEL_TYPES}
    dtypes = {
        "assay_ontology_term_id": bt.ExperimentalFactor.ontology_id,
        "cell_type_ontology_term_id": bt.CellType.ontology_id,
        "development_stage_ontology_term_id": bt.DevelopmentalStage.ontology_id,
        "disease_ontology_term_id": bt.Disease.ontology_id,
        "self_reported_ethnicity_ontology_term_id": bt.Ethnicity.ontology_id,
        "sex_ontology_term_id": bt.Phenotype.ontology_id,
        # primary cell culture names a cell type as its tissue, as in CELLxGENE
        "tissue_ontology_term_id": [bt.Tissue.ontology_id, bt.CellType.ontology_id],
        "donor_id": label_type["Donor"],
        "suspension_type": label_type["SuspensionType"],
        "tissue_type": label_type["TissueType"],
        "is_primary_data": bool,
    }
    features = [ln.Feature(name=name, dtype=dtype).save() for name, dtype in dtypes.items()]
    obs = ln.Schema(
        name="cellquery CELLxGENE obs", features=features, otype="DataFrame", minimal_set=True
    ).save()
    return ln.Schema(name=SCHEMA_NAME, otype="AnnData", slots={"obs": obs}, minimal_set=True).save()


def register_dataset(ln, spec: DatasetSpec, path: Path, schema):
    """Save one h5ad as a curated artifact (a new version when its key exists); returns the artifact."""
    import anndata as ad
    import bionty as bt

    existing = ln.Artifact.filter(key=spec.key, version_tag=str(spec.revision)).one_or_none()
    if existing is not None:
        return existing
    obs = ad.read_h5ad(path, backed="r").obs
    donor_type = ln.ULabel.get(name="Donor", is_type=True)
    for donor in obs["donor_id"].cat.categories:
        ln.ULabel(name=donor, type=donor_type).save()
    artifact = ln.Artifact.from_anndata(path, key=spec.key, description=spec.description)
    artifact.version_tag = str(spec.revision)
    artifact.n_observations = spec.n_cells
    curator = ln.curators.AnnDataCurator(artifact, schema)
    curator.validate()
    artifact = curator.save_artifact()
    artifact.organisms.add(bt.Organism.get(ontology_id=spec.organism))
    artifact.features.add_values(
        {
            "dataset_id": spec.dataset_id,
            "dataset_version_id": spec.dataset_version_id,
            "schema_version": "7.1.0",
            "n_donors": spec.n_donors,
        }
    )
    ln.Artifact.filter(id=artifact.id).update(created_by=ln.User.get(handle=spec.curator))
    return artifact


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
