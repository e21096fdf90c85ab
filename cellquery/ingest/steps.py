"""The ingest's steps, one function per Snakemake rule (see `rules/ingest.smk`): a submission per new file,
the registry's version, its Census-shaped store, the atlas's summary."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from cellquery.cellxgene.release import releases
from cellquery.cellxgene.validator import validate
from cellquery.files import h5ad
from cellquery.files.atomic import atomic_path, write_json
from cellquery.ingest import registry
from cellquery.ingest.standardize import SHOWN, StandardizeError, standardize
from cellquery.ingest.store import CENSUS_KEY, move_store, place_store
from cellquery.instances.atlas_instance import AtlasInstance
from cellquery.instances.lamin import connect, recreate_database
from cellquery.store.build import build_census
from cellquery.store.experiment import LABELLED_TERMS
from cellquery.store.increment import extend_census
from cellquery.store.sources import SourceDataset
from cellquery.workflow.faults import failpoint

log = logging.getLogger(__name__)

DATASET_KEY = "h5ads/{dataset}.h5ad"


def submit(source: Path, out: Path) -> None:
    """Standardize one file and have the CELLxGENE validator accept it; the submission at `out` carries the
    portal's labels (as the validator adds them). Refused: one line per problem, nothing written."""
    unlabelled = out.with_name(f".unlabelled-{out.name}")
    try:
        done = standardize(source, unlabelled)
        with atomic_path(out) as staging:
            errors = validate([unlabelled], add_labels={unlabelled: staging})[unlabelled]
            if errors:
                shown = [f"{source.name}: validator: {error}" for error in errors[:SHOWN]]
                more = (
                    [f"{source.name}: validator: and {len(errors) - SHOWN} more"]
                    if len(errors) > SHOWN
                    else []
                )
                raise StandardizeError(*shown, *more)
    finally:
        unlabelled.unlink(missing_ok=True)
    log.info(
        "%s: %d cells, %d genes (counts from %s; names made ids: %s); accepted by the validator",
        source.name,
        done.cells,
        done.genes,
        done.counts_from,
        done.names_mapped or "none",
    )


def register_version(
    atlas: AtlasInstance, version: str, plan: dict, submissions: dict[str, Path], receipt: Path
):
    """Register a version: the files it adds (a dataset's newer file a new version of its artifact), the
    terms they use, and the collection version of every dataset (`plan["members"]`: each with the version
    whose file it is; the others kept as the previous version holds them). A rerun after a kill finds what
    was saved (by hash) and completes it."""
    atlas.mark_unbuilt()
    ln = _instance(atlas)
    uns = {dataset: h5ad.read_uns(path) for dataset, path in submissions.items()}
    _grow_registry(submissions, uns)
    added = {}
    with registry.offline_organism_inference():
        for number, (dataset, path) in enumerate(sorted(submissions.items()), start=1):
            added[dataset] = _registered(ln, dataset, path, uns[dataset])
            log.info("%s: registered %s [%d/%d]", dataset, added[dataset].uid, number, len(submissions))
            failpoint("ingest-register")
    previous_version = plan["previous"]
    kept = (
        _read(atlas.root / "versions" / f"{previous_version}.json")["artifacts"] if previous_version else {}
    )
    members = {
        dataset: added.get(dataset) or ln.Artifact.get(uid=kept[dataset]) for dataset in plan["members"]
    }
    previous = ln.Collection.filter(key=registry.COLLECTION_KEY, version_tag=previous_version).one_or_none()
    description = f"{plan['atlas']} {version}"
    collection = registry.collection_version(ln, list(members.values()), version, previous, description)
    write_json(
        receipt,
        {
            "version": version,
            "collection": collection.uid,
            "artifacts": {dataset: artifact.uid for dataset, artifact in members.items()},
            "added": sorted(added),
        },
    )
    log.info("%s %s: %d datasets, %d added or replaced", plan["atlas"], version, len(members), len(added))


def _instance(atlas: AtlasInstance):
    """The atlas's instance, made with its defaults on the first ingest (a half-made one made again)."""
    made = atlas.receipt
    if made.exists():
        return connect(atlas.env())
    shutil.rmtree(atlas.storage, ignore_errors=True)
    if atlas.db_url:  # the atlas's own database: what a killed first ingest left goes too
        recreate_database(atlas.db_url)
    ln = atlas.instance.create()
    registry.create_defaults(ln)
    write_json(made, {"slug": atlas.slug, "db": ln.setup.settings.instance.db})
    return ln


def _grow_registry(submissions: dict[str, Path], uns: dict[str, dict]) -> None:
    """The ontology terms, gene references and life stages the submissions use."""
    import bionty as bt

    terms, stages = set(), {}
    for dataset, path in submissions.items():
        obs = h5ad.read_frame(path, "obs")
        organism = uns[dataset]["organism_ontology_term_id"]
        for column in LABELLED_TERMS:
            terms |= set(obs[f"{column}_ontology_term_id"].astype(str))
        if organism not in registry.WITH_STAGE_ONTOLOGY:
            stages.setdefault(organism, set()).update(obs["development_stage_ontology_term_id"].astype(str))
    registry.grow_ontologies(terms)
    organisms = {u["organism_ontology_term_id"] for u in uns.values()}
    sources = bt.Source.filter(entity="bionty.Gene", version=registry.GENE_SOURCE_VERSION)
    with_genes = set(sources.values_list("organism", flat=True))
    registry.add_gene_sources(o for o in sorted(organisms) if registry.ORGANISM_NAMES[o] not in with_genes)
    for organism, ids in sorted(stages.items()):
        registry.add_life_stages(organism, ids - {"unknown", "na"})


def _registered(ln, dataset: str, path: Path, uns: dict):
    """The submission's artifact, annotated by lamindb's CELLxGENE curator: a new dataset's first version,
    or a newer version of the dataset's artifact."""
    artifact = ln.Artifact(
        path, key=DATASET_KEY.format(dataset=dataset), description=str(uns.get("title") or dataset)
    )
    artifact = artifact.save()
    registry.curate(ln, artifact, uns["organism_ontology_term_id"], uns.get("schema_version") or "7.0.0")
    return artifact


def build_version_store(atlas: AtlasInstance, version: str, previous: str | None, receipt: Path) -> None:
    """The version's Census-shaped store, built beside the storage, validated, then put in place and
    registered (`cell-census/<version>/soma`, revising the previous version's). From the previous version's
    store when there is one: only what changed is read and written (`cellquery.store.increment`)."""
    atlas.mark_unbuilt()
    ln = connect(atlas.env())
    collection = ln.Collection.get(key=registry.COLLECTION_KEY, version_tag=version)
    key = CENSUS_KEY.format(version=version)
    staging = atlas.root / "census-staging" / key
    shutil.rmtree(staging, ignore_errors=True)
    sources, release = _sources(collection), releases()[-1]  # submissions are of the newest schema
    if previous:
        before = atlas.storage / CENSUS_KEY.format(version=previous)
        summary = extend_census(before, sources, staging, version, release)
        log.info(
            "census %s from %s: %d datasets reused, %d added, %d dropped",
            version,
            previous,
            len(summary["reused"]),
            len(summary["added"]),
            len(summary["dropped"]),
        )
    else:
        summary = build_census(sources, staging, version, release)
    failpoint("ingest-store")
    artifact = place_store(
        ln, staging, key, version, summary, lambda store: move_store(store, atlas.storage / key)
    )
    write_json(receipt, {**summary, "key": key, "uid": artifact.uid, "path": str(artifact.path)})
    log.info(
        "census %s: %d cells from %d datasets", version, summary["total_cell_count"], summary["datasets"]
    )


def _sources(collection) -> list[SourceDataset]:
    """A collection version's h5ads, with their identifiers (the artifact's uid the dataset's version)."""
    return [
        SourceDataset(
            dataset_id=Path(artifact.key).stem,
            dataset_version_id=artifact.uid,
            title=artifact.description,
            path=Path(artifact.cache()),
            collection_id=collection.uid,
            collection_name=collection.description,
            citation=artifact.description,
        )
        for artifact in collection.ordered_artifacts.all()
    ]


def write_summary(atlas: AtlasInstance, stores: list[Path]) -> None:
    """What the atlas holds, per version: datasets and cells; the atlas is built once this is written."""
    versions = {Path(p).stem: _read(p) for p in stores}
    write_json(
        atlas.summary,
        {
            "atlas": atlas.name,
            "slug": atlas.slug,
            "versions": list(versions),
            "census": {
                v: {"cells": s["total_cell_count"], "datasets": s["datasets"]} for v, s in versions.items()
            },
        },
    )
    for version, store in versions.items():
        log.info(
            "%s %s: %d datasets, %d cells", atlas.name, version, store["datasets"], store["total_cell_count"]
        )


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())
