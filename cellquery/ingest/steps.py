"""The ingest's steps of its own, one function per Snakemake rule (see `rules/ingest.smk`): a submission per
new file, the datasets of another instance found, the atlas's summary (a version registered:
`cellquery.ingest.version`; its Census-shaped store: `cellquery.ingest.store`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cellquery.cellxgene.validator import validate
from cellquery.files.atomic import atomic_path, write_json
from cellquery.ingest import imports
from cellquery.ingest.standardize import SHOWN, StandardizeError, standardize
from cellquery.instances.atlas_instance import AtlasInstance
from cellquery.instances.source import Source

log = logging.getLogger(__name__)


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


def find_imports(source: Source, wanted: dict[str, str | None], storage: dict, receipt: Path) -> None:
    """The datasets of another instance a version records (`cellquery.ingest.imports.find`), with where
    their files were read: what `register_version` records zero-copy."""
    write_json(receipt, imports.find(source, wanted, storage))


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
