"""What a Census release is: per schema generation, its experiments, the builder's inclusion rules and the
dataset schema's facts (`reference/census_releases.yaml`, taken from the Census builder), chosen by a store's
own `census_info/summary`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cellquery.cellxgene.inclusion import CELL_ORGANISM
from cellquery.cellxgene.ontology import label
from cellquery.errors import SourceError, SpecError

TABLE = Path(__file__).with_name("reference") / "census_releases.yaml"


@dataclass(frozen=True)
class CensusRelease:
    """One generation of Census releases: a Census schema version built from one dataset schema version."""

    census_schema: str
    dataset_schema: str
    releases: tuple[str, ...]  # the LTS releases of this generation
    builder_commit: str
    organism_in: str  # "obs": the organism per cell (schema 5); "uns": per file (schema 7)
    included_tissue_types: tuple[str, ...]
    tissue_types: tuple[str, ...]  # the values the dataset schema allows
    experiments: dict[str, str]  # census_data/<name> -> its organism
    rna_assays: frozenset[str]
    full_gene_assays: frozenset[str]

    @property
    def name(self) -> str:
        """`Census schema 2.4.0 (dataset schema 7.0.0)`."""
        return f"Census schema {self.census_schema} (dataset schema {self.dataset_schema})"

    @property
    def identity(self) -> dict[str, str]:
        """What `query.json` records of the release (its `census.release`)."""
        return {"census_schema_version": self.census_schema, "dataset_schema_version": self.dataset_schema}

    def experiment(self, organism: str) -> str:
        """The experiment of an organism: `NCBITaxon:9606` -> `homo_sapiens`."""
        for name, term in self.experiments.items():
            if term == organism:
                return name
        raise SpecError(f"organism: {label(organism)} has no experiment in {self.name}")

    def included_cells(self, obs: pd.DataFrame, organism: str) -> np.ndarray:
        """Cells the builder keeps: an included tissue type, an RNA assay, and (schema 5, the organism per
        cell) the experiment's organism."""
        if obs.empty:
            return np.zeros(0, dtype=bool)
        tissue = obs["tissue_type"].astype(str).isin(self.included_tissue_types)
        assay = obs["assay_ontology_term_id"].astype(str).isin(self.rna_assays)
        return (tissue & assay).to_numpy() & self.cells_of(obs, organism)

    def cells_of(self, obs: pd.DataFrame, organism: str) -> np.ndarray:
        """The organism's cells of a file: those recording it (schema 5, the organism per cell: a xenograft
        holds its host's cells too), or all (schema 7: per file, `file_holds` decides)."""
        if self.organism_in == "obs" and CELL_ORGANISM in obs:
            return (obs[CELL_ORGANISM].astype(str) == organism).to_numpy()
        return np.ones(len(obs), dtype=bool)

    def file_holds(self, uns: dict, obs: pd.DataFrame, var: pd.DataFrame, organism: str) -> bool:
        """Whether the builder reads a file's cells into the organism's experiment at all: none from a file
        with no gene of the organism, of another organism (schema 7), or with several organisms among both its
        genes and its cells (schema 5)."""
        genes = var["feature_biotype"].astype(str) == "gene"
        var_organisms = set(var["feature_reference"].astype(str)[genes])
        if organism not in var_organisms:
            return False
        if self.organism_in == "uns":
            return uns.get("organism_ontology_term_id") == organism
        tissue = obs["tissue_type"].astype(str).isin(self.included_tissue_types)
        obs_organisms = set(obs[CELL_ORGANISM].astype(str)[tissue])
        return not (len(var_organisms) > 1 and len(obs_organisms) > 1)


@cache
def releases() -> tuple[CensusRelease, ...]:
    """The generations cellquery serves, oldest first."""
    table = yaml.safe_load(TABLE.read_text())
    return tuple(
        CensusRelease(
            census_schema=census_schema,
            dataset_schema=entry["dataset_schema"],
            releases=tuple(entry["releases"]),
            builder_commit=entry["builder"]["commit"],
            organism_in=entry["organism_in"],
            included_tissue_types=tuple(entry["included_tissue_types"]),
            tissue_types=tuple(entry["tissue_types"]),
            experiments=dict(entry["experiments"]),
            rna_assays=frozenset(entry["rna_assays"]),
            full_gene_assays=frozenset(entry["full_gene_assays"]),
        )
        for census_schema, entry in table.items()
    )


def tissue_types() -> list[str]:
    """Every tissue type a served release names (a spec is checked against its own release in resolve)."""
    return [*dict.fromkeys(t for release in releases() for t in release.tissue_types)]


def release_named(version: str) -> CensusRelease:
    """The generation an LTS release (`2025-01-30`) was built at, as the release table lists it."""
    return next(release for release in releases() if version in release.releases)


def release_for(schemas: Iterable[str | None], where: str) -> CensusRelease:
    """The newest generation built from files of these dataset schemas (`uns/schema_version`; a file stating
    none is of the newest): a store holds files of one schema major, as each generation's builder reads its
    own. Files of several, or of one no generation is built from: refused in one line."""
    newest = releases()[-1]
    majors = sorted({str(schema or newest.dataset_schema).split(".")[0] for schema in schemas})
    built = [r for r in releases() if [r.dataset_schema.split(".")[0]] == majors]
    if not built:
        held = ", ".join(f"{major}.x" for major in majors)
        raise SourceError(
            f"{where}: its datasets are of CELLxGENE schema {held}; a store is built from datasets of one "
            f"schema among {', '.join(r.dataset_schema for r in releases())}"
        )
    return built[-1]


def _minor(version: str) -> tuple[int, int]:
    major, minor, *_ = (int(part) for part in str(version).split("."))
    return major, minor


def release_of(census_schema: str, dataset_schema: str, where: str = "census store") -> CensusRelease:
    """The generation of a store with these schema versions (as its `census_info/summary` states them, or
    `query.json` recorded them). A store older or newer than every generation served: refused in one line."""
    version = (_minor(census_schema), _minor(dataset_schema))
    for release in releases():
        if version == (_minor(release.census_schema), _minor(release.dataset_schema)):
            return release
    oldest, newest = releases()[0], releases()[-1]
    built = f"{where} has Census schema {census_schema} with dataset schema {dataset_schema}"
    if version < (_minor(oldest.census_schema), _minor(oldest.dataset_schema)):
        raise SourceError(
            f"{built}, older than the oldest release cellquery serves ({oldest.releases[0]}, {oldest.name}): "
            f"query {oldest.releases[0]} or later"
        )
    raise SourceError(f"{built}, newer than any cellquery knows ({newest.name}): update cellquery")


def recorded(store: dict) -> CensusRelease:
    """The release of a census store as resolve recorded it (`query.json`'s `census`)."""
    stated = store["release"]
    return release_of(stated["census_schema_version"], stated["dataset_schema_version"])


def renamed_tissue_types(older: CensusRelease, newer: CensusRelease) -> dict[str, str]:
    """A tissue type one generation names and the other does not, by the name the other gives it
    (schema 5's `cell culture` is schema 7's `primary cell culture`)."""
    gone = [t for t in older.tissue_types if t not in newer.tissue_types]
    new = [t for t in newer.tissue_types if t not in older.tissue_types]
    return dict(zip(gone, new, strict=False))


def tissue_type_hint(value: str, release: CensusRelease) -> str:
    """Why a tissue type another generation names is refused: the name this release gives it."""
    for other in releases():
        if other is not release and value in (renames := renamed_tissue_types(other, release)):
            named = f"dataset schema {other.dataset_schema}'s name"
            return f": {value!r} is {named}, this store's is {renames[value]!r}"
    return f" (its tissue types: {', '.join(release.tissue_types)})"


def check_spec(release: CensusRelease, held: list[str], where: str, organism: str, cells: dict) -> None:
    """The spec's organism and tissue types, checked against the census store it queries (`where`): its
    release and the experiments it holds."""
    if organism not in release.experiments.values():
        holding = [r.releases[0] for r in releases() if organism in r.experiments.values()]
        since = f"; Census {holding[0]} and later hold them" if holding else ""
        raise SpecError(
            f"organism: {where} holds no {label(organism)} cells ({release.name} has no experiment for "
            f"them; it holds {', '.join(held)}){since}"
        )
    experiment = release.experiment(organism)
    if experiment not in held:
        raise SpecError(
            f"organism: {where} holds no {label(organism)} cells (no {experiment} experiment; it holds "
            f"{', '.join(held)})"
        )
    criterion = cells.get("tissue_type")
    if criterion is None:
        return
    values = criterion["not_in"] if isinstance(criterion, dict) else criterion
    for value in values if isinstance(values, list) else [values]:
        if value not in release.tissue_types:
            raise SpecError(
                f"cells.tissue_type: {value!r} is no tissue type of {where}, {release.name}"
                f"{tissue_type_hint(value, release)}"
            )
