"""What an instance holds, without writing lamindb code: `python -m cellquery releases` lists the collection
versions with their datasets and cells; `python -m cellquery values COLUMN` prints each value of an obs
column with its cells and datasets, narrowed by criteria as a spec writes them. Both read the registry and
the census store of the release, never an h5ad."""

from __future__ import annotations

from pathlib import Path

import yaml

from cellquery.errors import SpecError
from cellquery.spec.query_spec import ONTOLOGY_COLUMNS, QUERYABLE, QuerySpec, spec_of, suggest

EXPLORER = "explore"  # the name of the spec a question is asked as


def question(organism: str, version: str | None, instance: str, criteria: list[str]) -> QuerySpec:
    """A question as a spec: `column=value` criteria (a YAML value: `cell_type=[T cell, B cell]`)."""
    cells = {}
    for criterion in criteria:
        column, equals, value = criterion.partition("=")
        if not equals:
            raise SpecError(f"criteria: {criterion!r} is no COLUMN=VALUE (e.g. tissue=kidney)")
        cells[column.strip()] = yaml.safe_load(value)
    source = {"instance": instance, **({"version": version} if version else {})}
    data = {"name": EXPLORER, "organism": organism, "source": source, "cells": cells}
    return spec_of(data, Path(EXPLORER))


def values(spec: QuerySpec, source, column: str) -> list[str]:
    """Each value of `column` among the cells the criteria select, most cells first: cells, datasets, the
    value (an ontology term by label and id)."""
    from cellquery.cellxgene.ontology import label
    from cellquery.query.census_route import experiment, obs_filter, open_store
    from cellquery.query.value_counts import per_value
    from cellquery.spec.criteria import resolve

    location, collection = _store(spec, source)
    stored = ONTOLOGY_COLUMNS[column][0] if column in ONTOLOGY_COLUMNS else column
    criteria = resolve(spec)
    with open_store(location) as census:
        obs = experiment(census, location, spec.organism).obs
        if stored not in obs.schema.names:
            raise SpecError(f"values: unknown obs column {column!r}{suggest(column, sorted(QUERYABLE))}")
        read = obs.read(
            column_names=list(dict.fromkeys(["dataset_id", stored])),
            value_filter=obs_filter(obs, criteria, None),
        )
        frame = read.concat().to_pandas()
    counts = per_value(frame, stored)
    header = f"{column} of {label(spec.organism)} cells in {collection.key} {collection.version_tag}"
    lines = [
        f"{header}: {len(frame):,} cells, {_datasets(frame['dataset_id'].nunique())}",
        f"{'cells':>12} {'datasets':>8}  value",
    ]
    for value, found in sorted(counts.items(), key=lambda item: (-item[1]["cells"], item[0])):
        named = f"{label(value)} ({value})" if stored != column and ":" in value else value
        lines.append(f"{found['cells']:>12,} {found['datasets']:>8}  {named}")
    return lines


def releases(source) -> list[str]:
    """The collection versions of the source, newest first: datasets, and the cells of each census store."""
    from cellquery.ingest.registry import COLLECTION_KEY
    from cellquery.query.artifacts import store_location
    from cellquery.query.census_route import open_store

    registry = source.registry()
    lines = [f"{'version':<12} {'datasets':>8} {'cells':>12}  census store (Census schema / dataset schema)"]
    for collection in registry.Collection.filter(key=COLLECTION_KEY).order_by("-version_tag"):
        store = registry.Artifact.filter(key=f"cell-census/{collection.version_tag}/soma").first()
        if store is None:
            lines.append(f"{collection.version_tag:<12} {collection.artifacts.count():>8} {'':>12}  none")
            continue
        with open_store(store_location(store)) as census:
            summary = census["census_info"]["summary"].read().concat().to_pandas()
            datasets = census["census_info"]["datasets"].count
        stated = dict(zip(summary["label"], summary["value"], strict=True))
        schemas = f"{stated['census_schema_version']} / {stated['dataset_schema_version']}"
        cells = int(stated["total_cell_count"])
        lines.append(f"{collection.version_tag:<12} {datasets:>8} {cells:>12,}  {store.key} ({schemas})")
    return lines


def _store(spec: QuerySpec, source) -> tuple[dict, object]:
    """The census store of the spec's release, checked as resolve checks it, and its collection."""
    from cellquery.cellxgene.release import check_spec
    from cellquery.query import artifacts
    from cellquery.query.census_route import store_release, where

    registry = source.registry()
    collection = artifacts.collection_for(registry, spec)
    location = artifacts.store_location(artifacts.census_store(registry, spec, collection))
    release, held = store_release(location)
    check_spec(release, held, where(location), spec.organism, spec.cells)
    return {**location, "release": release.identity}, collection


def _datasets(count: int) -> str:
    return f"{count} dataset{'' if count == 1 else 's'}"
