"""Files as labs have them, made into CELLxGENE submissions (dataset schema 7, before the validator adds the
portal's labels): what is unambiguous is standardized (raw counts found in `raw.X`, `layers["counts"]` or `X`
and stored as float32; gene symbols to Ensembl ids through the schema's reference; label names to ontology
ids), the rest refused, one line per problem naming the file and the field. Read and written a block of cells
at a time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from cellquery.cellxgene import ontology
from cellquery.errors import SpecError
from cellquery.files import h5ad
from cellquery.files.atomic import atomic_path
from cellquery.spec.genes import SPIKE_INS, gene_table, symbols

log = logging.getLogger(__name__)

# An obs column of names -> the ontologies its names come from (its ids go in `<column>_ontology_term_id`)
LABELLED = {
    "assay": ("EFO",),
    "cell_type": ("CL",),
    "development_stage": ("HsapDv", "MmusDv", "UBERON"),
    "disease": ("MONDO", "PATO"),
    "self_reported_ethnicity": ("HANCESTRO",),
    "sex": ("PATO",),
    "tissue": ("UBERON", "CL"),
}
LITERAL_IDS = {"unknown", "na"}  # values the schema takes in some id columns, no ontology's terms
REQUIRED_OBS = ("donor_id", "is_primary_data", "suspension_type", "tissue_type")
PORTAL_OBS = (
    "organism",
    "organism_ontology_term_id",
    "observation_joinid",
    "tissue_general",
)  # not submitted
COUNT_PLACES = ("raw/X", "layers/counts", "X")  # where raw counts are looked for, in this order
ENSEMBL_ORGANISMS = {"ENSMUSG": "NCBITaxon:10090", "ENSCJAG": "NCBITaxon:9483", "ENSG": "NCBITaxon:9606"}
LEAST_GENES_KNOWN = 0.5  # below this share of its genes known to the organism's reference, a file is refused
SHOWN = 3  # values named in a problem line


class StandardizeError(SpecError):
    """A file that cannot be made a CELLxGENE dataset without a guess: one line per problem."""


@dataclass
class Standardized:
    """What was done to one file."""

    path: Path
    organism: str
    cells: int
    genes: int
    counts_from: str
    genes_dropped: list[str] = field(default_factory=list)
    names_mapped: dict[str, int] = field(default_factory=dict)  # obs column -> distinct names made ids


def standardize(source: Path, out: Path, organism: str | None = None) -> Standardized:
    """Write `source` as a CELLxGENE submission at `out` (atomically), or raise `StandardizeError`."""
    source = Path(source)
    where = source.name
    _check_is_h5ad(source)
    obs = h5ad.read_frame(source, "obs")
    if obs.empty:
        raise StandardizeError(f"{where}: holds no cells")
    counts_key, var_key = _counts_place(source)
    var = h5ad.read_frame(source, var_key)
    uns = h5ad.read_uns(source)
    organism = organism or _organism(where, uns, obs, var)
    problems: list[str] = []
    genes, dropped = _gene_ids(where, var.index, organism, problems)
    new_obs, mapped = _standard_obs(where, obs, problems)
    embeddings = _embeddings(where, source, len(obs), problems)
    if problems:
        raise StandardizeError(*problems)
    _check_whole_counts(where, source, counts_key, len(obs))
    keep = np.flatnonzero(genes.notna().to_numpy())
    new_var = pd.DataFrame({"feature_is_filtered": False}, index=pd.Index(genes.iloc[keep].to_numpy()))
    new_uns = {"title": str(uns.get("title") or source.stem), "organism_ontology_term_id": organism}
    blocks = (block[:, keep] for _, block in h5ad.row_blocks(source, np.arange(len(obs)), counts_key))
    with atomic_path(out) as staging:
        h5ad.write_streamed(staging, new_obs, new_var, blocks, uns=new_uns, obsm=embeddings)
    log.info("%s: %d cells, %d genes, counts from %s", where, len(obs), len(keep), counts_key)
    return Standardized(out, organism, len(obs), len(keep), counts_key, dropped, mapped)


def _embeddings(where: str, path: Path, n_cells: int, problems: list[str]) -> dict[str, np.ndarray]:
    """The file's embeddings (`obsm["X_..."]`, two or more numbers per cell); the schema asks one."""
    with h5py.File(path, "r") as f:
        found = {
            key: np.asarray(f["obsm"][key])
            for key in f.get("obsm", [])
            if key.startswith("X_") and isinstance(f["obsm"][key], h5py.Dataset)
        }
    found = {k: v for k, v in found.items() if v.ndim == 2 and v.shape[0] == n_cells and v.shape[1] >= 2}
    if not found:
        problems.append(f"{where}: obsm: no embedding (X_umap, X_pca, ...: two or more numbers per cell)")
    return found


def _check_is_h5ad(path: Path) -> None:
    """An HDF5 file with the groups an AnnData file has."""
    if path.stat().st_size == 0:
        raise StandardizeError(f"{path.name}: not an h5ad (an empty file)")
    if not h5py.is_hdf5(path):
        raise StandardizeError(f"{path.name}: not an h5ad (not an HDF5 file)")
    with h5py.File(path, "r") as f:
        missing = [key for key in ("obs", "var", "X") if key not in f]
    if missing:
        raise StandardizeError(
            f"{path.name}: not an h5ad (an HDF5 file without {', '.join(missing)}: a loom or a 10x .h5? "
            "read it with scanpy and write it with anndata's write_h5ad)"
        )


def _counts_place(path: Path) -> tuple[str, str]:
    """The matrix holding raw counts and its genes' frame: the first of `COUNT_PLACES` the file has."""
    with h5py.File(path, "r") as f:
        found = next(key for key in COUNT_PLACES if key in f)
    return found, ("raw/var" if found == "raw/X" else "var")


def _check_whole_counts(where: str, path: Path, key: str, n_cells: int) -> None:
    """Raw counts are whole numbers (stored as floats or not); the first that is not is named."""
    for rows, block in h5ad.row_blocks(path, np.arange(n_cells), key):
        values = block.data
        fraction = np.flatnonzero(values != np.round(values))
        if len(fraction):
            row = rows[np.searchsorted(block.indptr, fraction[0], side="right") - 1]
            place = {"raw/X": "raw.X", "layers/counts": 'layers["counts"]', "X": "X"}[key]
            raise StandardizeError(
                f"{where}: {place}: {values[fraction[0]]:g} in cell {row} is no count (raw counts are whole "
                'numbers; none found in raw.X, layers["counts"] or X): add the raw counts'
            )


def _organism(where: str, uns: dict, obs: pd.DataFrame, var: pd.DataFrame) -> str:
    """The file's one organism: stated in uns or obs, else told by its genes' Ensembl prefixes."""
    stated = uns.get("organism_ontology_term_id")
    if stated is None and "organism_ontology_term_id" in obs:
        counts = obs["organism_ontology_term_id"].astype(str).value_counts()
        if len(counts) > 1:
            held = ", ".join(f"{term} in {n} cells" for term, n in counts.items())
            raise StandardizeError(
                f"{where}: obs.organism_ontology_term_id: {len(counts)} organisms ({held}); a dataset holds "
                "one: split the file"
            )
        stated = counts.index[0]
    if stated is None:
        prefixes = var.index.astype(str).str.extract(r"^(ENS[A-Z]*G)", expand=False).value_counts()
        stated = ENSEMBL_ORGANISMS.get(prefixes.index[0]) if len(prefixes) else None
    if stated not in ontology.ORGANISMS:
        raise StandardizeError(
            f"{where}: organism: {stated or 'not stated'}; state it (uns.organism_ontology_term_id, one of "
            f"{', '.join(ontology.ORGANISMS)})"
        )
    return stated


def _gene_ids(where: str, names: pd.Index, organism: str, problems: list[str]) -> tuple[pd.Series, list[str]]:
    """Per var row its Ensembl id (NaN: dropped), from ids or symbols of the organism's reference; a symbol
    two rows share, or no gene of the reference, is dropped."""
    reference = pd.concat([gene_table(organism), gene_table(SPIKE_INS)])
    names = pd.Series(names.astype(str), index=names.astype(str))
    ids = names.where(names.isin(reference.index), names.map(symbols(organism)))
    ids[ids.duplicated(keep=False)] = np.nan  # two names, one gene: which one is meant is a guess
    dropped = names[ids.isna()].tolist()
    if ids.notna().mean() < LEAST_GENES_KNOWN:
        problems.append(
            f"{where}: var: {len(dropped)} of {len(names)} gene names are no genes of "
            f"{ontology.label(organism)} (e.g. {', '.join(map(repr, dropped[:SHOWN]))}): are they that "
            "organism's?"
        )
    return ids.reset_index(drop=True), dropped


def _standard_obs(where: str, obs: pd.DataFrame, problems: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """obs with an id column per labelled term (names made ids where they are the ontology's) and the
    required columns; every column missing or name unknown is a problem."""
    if obs.index.duplicated().any():
        repeated = obs.index[obs.index.duplicated()].unique()
        problems.append(
            f"{where}: obs: {len(repeated)} cell id{'s' if len(repeated) > 1 else ''} given to more than one "
            f"cell (e.g. {', '.join(map(repr, repeated[:SHOWN]))}); each cell needs its own"
        )
    new, mapped = obs.copy(), {}
    for column, prefixes in LABELLED.items():
        id_column = f"{column}_ontology_term_id"
        if id_column in obs:  # its names, where present, are the portal's labels: the validator writes them
            new = new.drop(columns=[column], errors="ignore")
            continue
        if column not in obs:
            problems.append(f"{where}: obs: no {id_column} (nor {column} names)")
            continue
        names = obs[column].astype(str)
        terms = {name: _term(name, prefixes) for name in names.unique()}
        unknown = [name for name, term in terms.items() if term is None]
        if unknown:
            problems.append(
                f"{where}: obs.{column}: {', '.join(map(repr, unknown[:SHOWN]))}"
                f"{f' and {len(unknown) - SHOWN} more' if len(unknown) > SHOWN else ''} are no term names of "
                f"{'/'.join(prefixes)}; give {id_column}"
            )
            continue
        new[id_column] = pd.Categorical(names.map(terms))
        new = new.drop(columns=column)
        mapped[column] = len(terms)
    new = new.drop(columns=[c for c in PORTAL_OBS if c in new])
    for column in REQUIRED_OBS:
        if column not in obs:
            problems.append(f"{where}: obs: no {column} (the schema asks it of every cell)")
    return new, mapped


def _term(name: str, prefixes: tuple[str, ...]) -> str | None:
    if name in LITERAL_IDS:
        return name
    return name if ontology.prefix_of(name) in prefixes else ontology.named(name, prefixes)
