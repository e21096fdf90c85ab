"""A cellquery result as a CELLxGENE submission h5ad (schema 7.1, checked by `cellxgene-schema validate`);
a result of Census 2025-01-30's schema 5.2 files is migrated to it first (`migrated`).

The submission format is the curator's side of the schema: ontology term ids without the labels the
portal adds on upload, `feature_is_filtered` without the gene labels, `title` and the organism in `uns`,
and at least one `X_` embedding. Which columns and keys are reserved is read from the validator's schema
definition (copied with its gene references into `cellquery/cellxgene/reference/`; `tests/test_validator.py`
checks the copy against the validator's own), so this module follows the validator it is checked by.

A submission describes one dataset; a cellquery result joins cells of several. The schema has no field
for source datasets, so the result keeps them where the schema leaves room: the `dataset_id` obs column
(an ordinary author column to the schema, also named in `uns["batch_condition"]`, the schema's field for
what defines batches), the obs index `<dataset_id>:<observation_joinid>` (the joinid column itself is
reserved for the portal, the index keeps each cell's identity), and `uns["cellquery"]`, the query's
provenance. Source embeddings are not carried: each dataset's UMAP or PCA was computed on that dataset
alone, so coordinates of cells from different datasets are not comparable; one PCA of the joined counts
is computed instead (`embedding`).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from cellquery.cellxgene.reference import SCHEMA_DEFINITION
from cellquery.files.atomic import atomic_path
from cellquery.spec.genes import GENCODE, NEWEST, SPIKE_INS, gene_table, schema_major
from cellquery.spec.query_spec import SCHEMA_OBS_COLUMNS, TERM_SEPARATOR, terms

REQUIRED_OBS = SCHEMA_OBS_COLUMNS  # what the schema requires of obs
SCHEMA_VERSION = "7.1.0"  # the schema written (the validator's, `reference/schema_definition.yaml`)
ETHNICITY = "self_reported_ethnicity_ontology_term_id"
EMBEDDING = "X_pca"
MAX_COMPONENTS = 50


@cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_DEFINITION.read_text())["components"]


def reserved(component: str) -> frozenset[str]:
    """Names a submission must not hold in `obs`, `var` or `uns`: reserved, deprecated, or written by the
    portal on upload (the labels of ontology ids, gene ids and the organism)."""
    spec = _schema()[component]
    names = {
        *spec.get("reserved_columns", ()),
        *spec.get("reserved_keys", ()),
        *spec.get("deprecated_columns", ()),
    }
    fields = [*spec.get("columns", {}).values(), *spec.get("keys", {}).values(), spec.get("index", {})]
    for field in fields:
        names.update(label.get("to_column") or label.get("to_key") for label in field.get("add_labels", ()))
    return frozenset(names - {None})


def migrated(adata: ad.AnnData, organism: str, release) -> tuple[ad.AnnData, list[str]]:
    """A result of a release of an older dataset schema (`release`, a `CensusRelease`: Census 2025-01-30,
    5.2.0) in the terms of the schema written: a donor's ethnicities joined by ` || ` (schema 5: commas),
    tissue types by their newer names (`release.renamed_tissue_types`), and genes the current reference no
    longer holds left out (the portal's own migration drops deprecated features). Returns it with a line per
    change."""
    from cellquery.cellxgene.release import releases, renamed_tissue_types

    if schema_major(release.dataset_schema) == NEWEST:
        return adata, []
    changes, obs = [], adata.obs.copy()
    if ETHNICITY in obs:
        older = obs[ETHNICITY].astype(str)
        obs[ETHNICITY] = older.map(lambda value: TERM_SEPARATOR.join(terms(value)))
        if joined := int((obs[ETHNICITY] != older).sum()):
            changes.append(f"{joined} cells' joined ethnicities written with ' || '")
    for old_name, new_name in renamed_tissue_types(release, releases()[-1]).items():
        if "tissue_type" in obs and (renamed := obs["tissue_type"].astype(str) == old_name).any():
            obs["tissue_type"] = obs["tissue_type"].astype(str).where(~renamed, new_name)
            changes.append(f"{int(renamed.sum())} cells' tissue_type {old_name!r} written {new_name!r}")
    current = adata.var_names.isin(gene_table(organism).index.union(gene_table(SPIKE_INS).index))
    if not current.all():
        gone = adata.var_names[~current]
        changes.append(
            f"{len(gone)} genes of {GENCODE[schema_major(release.dataset_schema)]} left out, not in "
            f"{GENCODE[NEWEST]}: {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}"
        )
        adata = adata[:, current].copy()
    adata.obs = obs
    return adata, changes


def to_submission(adata: ad.AnnData, *, title: str, organism: str) -> ad.AnnData:
    """A new AnnData in submission format: same cells (index and order), genes, raw counts in X, layers."""
    counts = sp.csr_matrix(adata.X, dtype=np.float32, copy=True)
    _check(adata, counts, title, organism)
    obs, var = _obs(adata.obs), _var(adata.var)
    uns = {"title": title, "organism_ontology_term_id": organism, "default_embedding": EMBEDDING}
    if "dataset_id" in obs:
        uns["batch_condition"] = ["dataset_id"]
    if adata.uns.get("cellquery"):
        uns["cellquery"] = copy.deepcopy(dict(adata.uns["cellquery"]))
    layers = {name: sp.csr_matrix(layer, dtype=np.float32) for name, layer in adata.layers.items()}
    obsm = {EMBEDDING: embedding(counts)}
    return ad.AnnData(X=counts, obs=obs, var=var, uns=uns, obsm=obsm, layers=layers)


def _check(adata: ad.AnnData, counts: sp.csr_matrix, title: str, organism: str) -> None:
    """Refuse what no conversion can make valid, with the reason (the validator crashes on a file with no
    cells, and reports cells without counts only once every other check has passed)."""
    if adata.n_obs == 0:
        raise ValueError("the result has no cells: a CELLxGENE dataset cannot be empty")
    if missing := [c for c in REQUIRED_OBS if c not in adata.obs]:
        raise ValueError(f"the result lacks obs columns the schema requires: {', '.join(missing)}")
    if not title.strip() or not organism.startswith("NCBITaxon:"):
        raise ValueError(f"need a non-empty title and an NCBITaxon organism id, got {title!r}, {organism!r}")
    canonical = _canonical(counts)
    if empty := int((np.diff(canonical.indptr) == 0).sum()):
        raise ValueError(f"{empty} cells have no counts in the result's genes; the schema requires some")
    if shared := int(_row_keys(canonical).duplicated(keep=False).sum()):
        reason = "the schema forbids duplicate raw rows (too few genes?)"
        raise ValueError(f"{shared} cells have the same counts as another cell: {reason}")


def _canonical(counts: sp.csr_matrix) -> sp.csr_matrix:
    canonical = counts.copy()
    canonical.sum_duplicates()
    canonical.eliminate_zeros()
    canonical.sort_indices()
    return canonical


def _row_keys(m: sp.csr_matrix) -> pd.Series:
    """One hashable key per cell of a canonical matrix, equal exactly when the cells' counts are equal."""
    bounds = zip(m.indptr[:-1], m.indptr[1:], strict=True)
    return pd.Series([(m.indices[a:b].tobytes(), m.data[a:b].tobytes()) for a, b in bounds])


def _obs(obs: pd.DataFrame) -> pd.DataFrame:
    """Submission obs: labels and reserved columns dropped, strings categorical, `is_primary_data` bool."""
    drop = reserved("obs")
    out = pd.DataFrame(index=pd.Index(obs.index.astype(str), name=None))
    for name in obs.columns:
        if name not in drop and not name.startswith("__"):
            out[name] = _as_bool(obs[name]) if name == "is_primary_data" else _column(obs[name])
    return out


def _var(var: pd.DataFrame) -> pd.DataFrame:
    """Submission var: gene ids as index, the portal's gene labels dropped, nothing filtered."""
    drop = reserved("var") | {"feature_is_filtered"}
    out = pd.DataFrame(index=pd.Index(var.index.astype(str), name=None))
    for name in var.columns:
        if name not in drop and not name.startswith("__"):
            out[name] = _column(var[name])
    out["feature_is_filtered"] = False
    return out


def _column(values: pd.Series) -> pd.Series:
    """Numbers and booleans as they are; anything else categorical of strings (the validator refuses
    mixed types, such as strings with the NaN of cells from datasets without the column)."""
    if pd.api.types.is_numeric_dtype(values.dtype):  # bool counts as numeric; categoricals do not
        return values.to_numpy()
    strings = values.astype(object).map(lambda v: v if isinstance(v, str) or pd.isna(v) else str(v))
    return pd.Categorical(strings.to_numpy())


def _as_bool(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=bool)
    mapped = values.astype(str).str.lower().map({"true": True, "false": False})
    if mapped.isna().any():
        raise ValueError("obs['is_primary_data'] must be True or False for every cell")
    return mapped.to_numpy(dtype=bool)


def embedding(counts: sp.csr_matrix) -> np.ndarray:
    """PCA of log-normalised counts, min(50, cells - 1, genes - 1) components (at least 2).

    With fewer than 3 cells or genes, PCA cannot give two meaningful components (centred, 2 cells span
    one dimension; 2 genes are all the data), so the embedding is the log-normalised expression of the
    first two genes, zero-padded: deterministic, and the data itself where there are at most 2 genes.
    """
    import scanpy as sc

    work = ad.AnnData(X=counts.copy())
    sc.pp.normalize_total(work)
    sc.pp.log1p(work)
    n_obs, n_vars = work.shape
    if min(n_obs, n_vars) < 3:
        first = work.X[:, :2].toarray()
        return np.pad(first, ((0, 0), (0, 2 - first.shape[1]))).astype(np.float32)
    sc.pp.pca(work, n_comps=min(MAX_COMPONENTS, n_obs - 1, n_vars - 1), random_state=0)
    return np.asarray(work.obsm["X_pca"], dtype=np.float32)


def write_submission(result: Path, out: Path, *, title: str, organism: str, release=None) -> list[str]:
    """Read a result h5ad and write its submission h5ad to `out` (atomically: no partial file); a result of
    a release of an older dataset schema (`release`) is migrated first. Returns what the migration changed."""
    current, changes = (
        migrated(ad.read_h5ad(result), organism, release) if release else (ad.read_h5ad(result), [])
    )
    submission = to_submission(current, title=title, organism=organism)
    with atomic_path(out) as tmp:
        submission.write_h5ad(tmp)
    return changes


def validate_submission(path: Path) -> list[str]:
    """The validator's errors for an h5ad in submission format (labels not ignored); [] when valid.

    The validator runs in its own environment (`cellquery.cellxgene.validator`, `make validator`)."""
    from cellquery.cellxgene.validator import validate

    return validate([path])[Path(path)]
