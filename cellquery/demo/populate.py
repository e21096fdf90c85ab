"""Build the demo LaminDB instance: bionty ontologies offline, curated h5ad artifacts, collections (through
`cellquery.ingest.registry`, as one's own atlas is made)."""

from __future__ import annotations

import contextlib
import logging

from cellquery.demo.catalog import (
    CURATORS,
    HUMAN,
    LIFE_STAGES,
    MARMOSET,
    MOUSE,
    DatasetSpec,
    all_terms,
)
from cellquery.ingest import registry
from cellquery.instances.demo_instance import DemoInstance, use_demo_settings
from cellquery.instances.lamin import connect

log = logging.getLogger(__name__)


def init_instance(demo: DemoInstance, scale: str):
    """Create the instance (SQLite or PostgreSQL) with bionty, then fill its ontologies; returns `lamindb`."""
    use_demo_settings(demo, fresh=True)
    demo.root.mkdir(parents=True, exist_ok=True)
    import lamindb_setup

    # init writes a `.lamin/current_instance` marker into the working directory: keep it in the demo
    with contextlib.chdir(demo.root):
        lamindb_setup.init(storage=str(demo.storage), name=demo.name, modules="bionty", db=demo.db_url)
    ln = connect(demo.env())
    registry.grow_ontologies(all_terms(scale))
    registry.create_defaults(ln, CURATORS)
    registry.add_gene_sources((HUMAN, MOUSE, MARMOSET))
    registry.add_life_stages(MARMOSET, LIFE_STAGES)
    registry.curation_schema(ln)
    return ln


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
    """lamindb's CELLxGENE curator, but for the datasets the catalog makes fail it."""
    if spec.curation_fails:
        log.warning("%s: curation failed, registered without labels", artifact.key)
        return False
    return registry.curate(ln, artifact, spec.organism, spec.schema)


def create_collections(ln, members: dict[str, list]) -> list:
    """One `cellxgene-census` collection per version, in version order; later ones revise earlier."""
    collections, previous = [], None
    for version in sorted(members):
        description = f"CELLxGENE Census release {version} (cellquery demo)"
        previous = registry.collection_version(ln, members[version], version, previous, description)
        collections.append(previous)
    return collections
