"""A collection version registered: the datasets it adds (submissions uploaded, datasets of other instances
recorded zero-copy, files the storage already holds registered where they lie), the terms they use grown
into the registry, each annotated by lamindb's CELLxGENE curator, and the `cellxgene-census` collection
version of every dataset. One step for an atlas's versions and the demo's releases."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cellquery.files import h5ad
from cellquery.files.atomic import write_json
from cellquery.ingest import imports, registry
from cellquery.instances.lamin import BuiltInFolder, recreate_database
from cellquery.spec.query_spec import terms as split_terms
from cellquery.store.experiment import LABELLED_TERMS
from cellquery.workflow.faults import failpoint

log = logging.getLogger(__name__)

DATASET_KEY = "h5ads/{dataset}.h5ad"  # a submission's
RELEASE_KEY = "cell-census/{version}/h5ads/{dataset}.h5ad"  # a release's file, as the public bucket keys it
ORGANISM = "organism_ontology_term_id"


@dataclass(frozen=True)
class Placed:
    """A file the storage holds already (`location`), read here at `local`."""

    local: Path
    location: str


@dataclass
class Additions:
    """What a version adds, by dataset: submissions (`submit`'s files), datasets of other instances
    (`find_imports`' receipts), files the storage holds already. `uncurated`: datasets left without the
    curator's labels (the demo's stand-ins for those the public instance's curator refused)."""

    submissions: dict[str, Path] = field(default_factory=dict)
    found: list[dict] = field(default_factory=list)
    placed: dict[str, Placed] = field(default_factory=dict)
    uncurated: frozenset[str] = frozenset()

    def imported(self) -> dict[str, tuple[dict, dict]]:
        """Each dataset of another instance: its manifest row and the source's identity."""
        return {d: (row, f["source"]) for f in self.found for d, row in f["datasets"].items()}

    def files(self) -> dict[str, Path]:
        """Where each added dataset's file is read here."""
        found = {d: Path(row["local"]) for d, (row, _) in self.imported().items()}
        placed = {d: p.local for d, p in self.placed.items()}
        return {**self.submissions, **found, **placed}


def register_version(folder: BuiltInFolder, version: str, plan: dict, additions: Additions, receipt: Path):
    """Register a version: the datasets it adds (a dataset's newer file a new version of its artifact), the
    terms they use, and the collection version of every dataset (`plan["members"]`: each with the version
    that added it; the others kept as the previous version holds them). Returns the members' artifacts. A
    rerun after a kill finds what was saved and completes it."""
    folder.mark_unbuilt()
    ln = _instance(folder)
    files = additions.files()
    uns = {dataset: h5ad.read_uns(path) for dataset, path in files.items()}
    cells = _grow_registry(files, uns)  # each file's cells per organism
    previous_version = plan["previous"]
    kept = (
        _read(folder.root / "versions" / f"{previous_version}.json")["artifacts"] if previous_version else {}
    )
    imported = additions.imported()
    added, refused = {}, []
    with registry.offline_organism_inference():
        for number, dataset in enumerate(sorted(files), start=1):
            if dataset in imported:
                artifact = imports.record(ln, *imported[dataset])
            else:
                title = str(uns[dataset].get("title") or dataset)  # as the public instance describes h5ads
                about = {"description": title, "n_observations": int(cells[dataset].sum())}
                artifact = _registered(ln, dataset, additions, version, kept.get(dataset), about)
            organism = cells[dataset].index[0]  # of most cells, where a schema 5 file states it per cell
            if not _curated(ln, artifact, organism, uns[dataset], dataset in additions.uncurated):
                refused.append(dataset)
            added[dataset] = artifact
            log.info("%s: registered %s [%d/%d]", dataset, artifact.uid, number, len(files))
            failpoint("ingest-register")
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
            "refused_by_curator": sorted(refused),
        },
    )
    log.info(
        "%s %s: %d datasets, %d added or replaced, %d without labels (the curator refused them)",
        plan["atlas"],
        version,
        len(members),
        len(added),
        len(refused),
    )
    return members


def _curated(ln, artifact, organism: str, uns: dict, skipped: bool) -> bool:
    """Whether lamindb's CELLxGENE curator annotated the artifact (`skipped`: left without labels)."""
    if skipped:
        log.warning("%s: registered without labels", artifact.key)
        return False
    return registry.curate(ln, artifact, organism, uns.get("schema_version") or "7.0.0")


def _instance(folder: BuiltInFolder):
    """The instance, made with its defaults on the first ingest (a half-made one made again), its files
    saved into its S3 location when it has one."""
    made = folder.receipt
    if made.exists():
        return folder.connect_writer()
    shutil.rmtree(folder.storage, ignore_errors=True)
    if folder.instance.db_url:  # the atlas's own database: what a killed first ingest left goes too
        recreate_database(folder.instance.db_url)
    ln = folder.instance.create()
    registry.create_defaults(ln)
    if folder.bucket_root:
        ln.Storage(root=folder.bucket_root).save()
    receipt = {"slug": folder.slug, "db": ln.setup.settings.instance.db, "data_root": folder.bucket_root}
    write_json(made, receipt)
    return folder.saving_to_bucket(ln)


def _grow_registry(files: dict[str, Path], uns: dict[str, dict]) -> dict[str, pd.Series]:
    """The ontology terms, gene references and life stages the files use; returns each file's cells per
    organism, most first."""
    import bionty as bt

    terms, stages, organisms, held = set(), {}, {}, set()
    for dataset, path in files.items():
        obs = h5ad.read_frame(path, "obs")
        cells = organisms[dataset] = _cell_organisms(uns[dataset], obs)
        held |= set(cells.index)
        for column in LABELLED_TERMS:  # a multi-valued column's values split into their terms
            values = obs[f"{column}_ontology_term_id"].astype(str).unique()
            terms |= {term for value in values for term in split_terms(value)}
        for organism in set(cells.index) - registry.WITH_STAGE_ONTOLOGY:
            stages.setdefault(organism, set()).update(obs["development_stage_ontology_term_id"].astype(str))
    registry.grow_ontologies(terms)
    sources = bt.Source.filter(entity="bionty.Gene", version=registry.GENE_SOURCE_VERSION)
    with_genes = set(sources.values_list("organism", flat=True))
    registry.add_gene_sources(o for o in sorted(held) if registry.ORGANISM_NAMES[o] not in with_genes)
    for organism, ids in sorted(stages.items()):
        registry.add_life_stages(organism, ids - {"unknown", "na"})
    return organisms


def _cell_organisms(uns: dict, obs: pd.DataFrame) -> pd.Series:
    """A file's organisms and their cells, most first: schema 7 states one per file, schema 5 one per cell."""
    if ORGANISM in uns:
        return pd.Series({uns[ORGANISM]: len(obs)})
    return obs[ORGANISM].astype(str).value_counts()


def _registered(ln, dataset: str, additions: Additions, version: str, previous_uid: str | None, about: dict):
    """A file's artifact, with the fields `about` gives: a file the storage holds registered where it lies,
    as the public instance's script registers a release's (keyed by the release, the release its
    `version_tag`, a new version of the dataset's artifact in the version before: one per release, even of
    the same bytes); or a submission uploaded (a newer version of the dataset's artifact if it has one)."""
    if dataset in additions.placed:
        key = RELEASE_KEY.format(version=version, dataset=dataset)
        if (existing := ln.Artifact.filter(key=key).one_or_none()) is not None:
            return existing
        revises = ln.Artifact.get(uid=previous_uid) if previous_uid else None
        location = additions.placed[dataset].location
        artifact = ln.Artifact(location, key=key, revises=revises, version_tag=version, skip_hash_lookup=True)
    else:
        artifact = ln.Artifact(additions.submissions[dataset], key=DATASET_KEY.format(dataset=dataset))
    for field_name, value in about.items():  # its own, not a revised artifact's
        setattr(artifact, field_name, value)
    return artifact.save()


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())
