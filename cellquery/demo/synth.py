"""Synthetic, schema-valid CELLxGENE h5ads (portal format, in the dataset schema of the spec: 7.0.0 or 5.2.0)
from a `DatasetSpec`."""

from __future__ import annotations

import hashlib
from base64 import b85encode
from functools import cache
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from xxhash import xxh3_64_intdigest

from cellquery.cellxgene import ontology
from cellquery.demo.catalog import (
    ETHNICITIES,
    FIBROBLAST,
    HUMAN,
    MARKERS,
    MOUSE,
    MOUSE_MARKER_SYMBOLS,
    SEXES,
    DatasetSpec,
    stages,
)
from cellquery.files.atomic import atomic_path
from cellquery.spec.genes import SPIKE_INS, gene_table, schema_major, schemas_with_genes_of, symbols
from cellquery.spec.query_spec import TERM_SEPARATOR, terms

N_SPIKE_INS = 20
MARKERS_PER_CELL_TYPE = 30
CULTURE = {"5": "cell culture", "7": "primary cell culture"}  # the tissue type of cultured cells, per schema
SEPARATORS = {"5": ",", "7": TERM_SEPARATOR}  # how a schema joins a donor's ethnicities
CHUNK_CELLS = 20_000
# How the demo's authors labelled their cells (the Census keeps only the ontology term).
AUTHOR_LABELS = {
    "T cell": "T cells",
    "CD4-positive, alpha-beta T cell": "CD4+ T",
    "CD8-positive, alpha-beta T cell": "CD8+ T",
    "B cell": "B cells",
    "naive B cell": "Naive B",
    "natural killer cell": "NK",
    "classical monocyte": "CD14+ Mono",
    "dendritic cell": "cDC",
    "neutrophil": "Neutrophils",
    "macrophage": "Macrophages",
    "alveolar macrophage": "AM",
    "microglial cell": "Microglia",
    "neuron": "Neurons",
    "astrocyte": "Astro",
    "oligodendrocyte": "Oligo",
    "epithelial cell of proximal tubule": "PT",
    "podocyte": "POD",
    "kidney collecting duct principal cell": "PC",
    "pulmonary alveolar type 2 cell": "AT2",
    "hepatocyte": "Hep",
    "fibroblast": "Fib",
}


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable hash of its parts, so every run draws the same numbers."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@cache
def marker_genes(organism: str, cell_type: str) -> pd.Index:
    """Ensembl ids of a cell type's canonical markers in the organism (catalog.MARKERS)."""
    ids = {name.lower(): gene for name, gene in symbols(organism).items()}
    names = [MOUSE_MARKER_SYMBOLS.get(m, m) if organism == MOUSE else m for m in MARKERS.get(cell_type, ())]
    return pd.Index([ids[n.lower()] for n in names if n.lower() in ids]).unique()


@cache
def all_markers(organism: str) -> pd.Index:
    return pd.Index(sorted(set().union(*(marker_genes(organism, t) for t in MARKERS))))


@cache
def gene_pool(organism: str, seed: int) -> pd.Index:
    """The genes the demo draws its panels from: 4,000 protein-coding genes and every marker, sorted; genes of
    every schema generation's reference, so that a dataset holds the same genes in each."""
    genes = gene_table(organism)
    everywhere = genes.index
    for schema in schemas_with_genes_of(organism):
        everywhere = everywhere.intersection(gene_table(organism, schema).index)
    coding = genes.index[genes["feature_type"] == "protein_coding"].intersection(everywhere).sort_values()
    picked = rng_for(seed, organism, "pool").choice(len(coding), size=4000, replace=False)
    return coding[np.sort(picked)].union(all_markers(organism).intersection(everywhere))


def dataset_markers(spec: DatasetSpec) -> pd.Index:
    """The markers of every cell type a dataset's cells can have (cultured cells are fibroblasts)."""
    cell_types = (*spec.cell_types, FIBROBLAST) if spec.culture_fraction else spec.cell_types
    return pd.Index(sorted(set().union(*(marker_genes(spec.organism, t) for t in cell_types))))


def panel_genes(spec: DatasetSpec, seed: int) -> pd.Index:
    """A window of the pool (panel 0 and panel 1 overlap in three quarters of it, so gene joins differ),
    and the markers of the dataset's cell types."""
    pool = gene_pool(spec.organism, seed)
    offset = spec.panel * spec.n_genes // 4
    return pool[offset : offset + spec.n_genes].union(dataset_markers(spec))


@cache
def gene_weights(organism: str, seed: int) -> pd.Series:
    """A baseline expression level per pool gene: heavy-tailed, like real data."""
    pool = gene_pool(organism, seed)
    return pd.Series(rng_for(seed, organism, "weights").lognormal(0, 2.2, len(pool)), index=pool)


def cell_type_profiles(spec: DatasetSpec, genes: pd.Index, seed: int) -> np.ndarray:
    """Expression profiles (cell types x genes, rows sum to 1): each cell type's canonical markers, and
    random ones up to 30, expressed well above the baseline."""
    weights = gene_weights(spec.organism, seed)
    base = weights.reindex(genes).to_numpy()
    high = float(np.quantile(weights, 0.9))
    pool = gene_pool(spec.organism, seed)
    profiles = []
    for cell_type in spec.cell_types:
        canonical = marker_genes(spec.organism, cell_type)
        extra = rng_for(seed, spec.organism, cell_type).choice(pool, MARKERS_PER_CELL_TYPE - len(canonical))
        profile = np.where(genes.isin(canonical), np.maximum(base, high), base)
        profile = profile * np.where(genes.isin(canonical.union(extra)), 40.0, 1.0)
        profiles.append(profile / profile.sum())
    return np.vstack(profiles)


def observation_joinid(names: pd.Index) -> np.ndarray:
    """The portal's `observation_joinid`: base85 of the xxh3 hash of each obs name."""
    return np.array([b85encode(xxh3_64_intdigest(n).to_bytes(8, "big")).decode() for n in names])


def _donor_table(spec: DatasetSpec, rng: np.random.Generator) -> pd.DataFrame:
    human = spec.organism == HUMAN
    donors = pd.DataFrame(
        {
            "donor_id": [f"{spec.slug}-donor-{i + 1}" for i in range(spec.n_donors)],
            "sex_ontology_term_id": rng.choice(SEXES, spec.n_donors),
            "development_stage_ontology_term_id": rng.choice(stages(spec.organism), spec.n_donors),
            "self_reported_ethnicity_ontology_term_id": (
                rng.choice(ETHNICITIES, spec.n_donors) if human else ["na"] * spec.n_donors
            ),
            "disease_ontology_term_id": [spec.diseases[i % len(spec.diseases)] for i in range(spec.n_donors)],
        }
    )
    if spec.mixed_ancestry:  # the last donor states two ethnicities, in ascending order
        joined = sorted(ETHNICITIES[:2])
        donors.loc[spec.n_donors - 1, "self_reported_ethnicity_ontology_term_id"] = SEPARATORS[
            schema_major(spec.schema)
        ].join(joined)
    return donors


def with_host_cells(spec: DatasetSpec, donors: pd.DataFrame, obs: pd.DataFrame, rng) -> pd.DataFrame:
    """A xenograft: a share of the cells are the host animals' (their organism per cell, their stages, no
    ethnicity), measured on the graft's genes."""
    host = rng.random(len(obs)) < spec.host_fraction
    animals = rng.integers(1, 3, int(host.sum()))
    obs.loc[host, "organism_ontology_term_id"] = spec.host
    donors = donors.copy()
    donors.loc[host, "donor_id"] = [f"{spec.slug}-host-{k}" for k in animals]
    donors.loc[host, "development_stage_ontology_term_id"] = rng.choice(stages(spec.host), int(host.sum()))
    donors.loc[host, "self_reported_ethnicity_ontology_term_id"] = "na"
    return donors


def term_label(value: str, schema: str) -> str:
    """The label the validator of a schema (major version) writes for a term id (each term's of a
    multi-valued one, joined as the schema joins them)."""
    return SEPARATORS[schema].join("na" if t == "na" else ontology.label(t) for t in terms(value))


def make_obs(spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Cell metadata: ontology term ids with their labels, donors, tissue type, joinids."""
    rng = rng_for(seed, spec.content_stem, "obs")
    n = spec.n_cells
    weights = rng.dirichlet(np.full(len(spec.cell_types), 3.0))
    cell_type_index = np.sort(rng.choice(len(spec.cell_types), size=n, p=weights))
    donors = _donor_table(spec, rng).iloc[rng.integers(0, spec.n_donors, n)].reset_index(drop=True)
    barcodes = rng.choice(list("ACGT"), size=(n, 16)).view("<U16").ravel()
    names = pd.Index([f"{b}-{i}" for i, b in enumerate(barcodes)], name=None)

    cell_types = np.asarray(spec.cell_types)[cell_type_index]
    tissue_type = np.full(n, "tissue", dtype=object)
    tissue = np.full(n, spec.tissue, dtype=object)
    if spec.culture_fraction:
        culture = rng.random(n) < spec.culture_fraction
        tissue_type[culture] = CULTURE[schema_major(spec.schema)]
        tissue[culture] = FIBROBLAST
        cell_types = np.where(culture, FIBROBLAST, cell_types)

    obs = pd.DataFrame(index=names)
    if schema_major(spec.schema) == "5":  # the organism per cell (schema 7: per file, in uns)
        obs["organism_ontology_term_id"] = spec.organism
    if spec.host:
        donors = with_host_cells(spec, donors, obs, rng)
    obs["assay_ontology_term_id"] = spec.assay
    obs["cell_type_ontology_term_id"] = cell_types
    obs["development_stage_ontology_term_id"] = donors["development_stage_ontology_term_id"].to_numpy()
    obs["disease_ontology_term_id"] = donors["disease_ontology_term_id"].to_numpy()
    obs["donor_id"] = donors["donor_id"].to_numpy()
    obs["is_primary_data"] = spec.primary
    obs["self_reported_ethnicity_ontology_term_id"] = donors[
        "self_reported_ethnicity_ontology_term_id"
    ].to_numpy()
    obs["sex_ontology_term_id"] = donors["sex_ontology_term_id"].to_numpy()
    obs["suspension_type"] = spec.suspension_type
    obs["tissue_ontology_term_id"] = tissue
    obs["tissue_type"] = tissue_type
    for id_column in [c for c in list(obs.columns) if c.endswith("_ontology_term_id")]:
        label_column = id_column.removesuffix("_ontology_term_id")
        labels = {t: term_label(t, schema_major(spec.schema)) for t in set(obs[id_column])}
        obs[label_column] = obs[id_column].map(labels)
    for column in obs.columns:
        if column != "is_primary_data":
            obs[column] = pd.Categorical(obs[column].to_numpy())
    obs["observation_joinid"] = observation_joinid(names)
    return with_author_columns(obs, spec, seed)


def with_author_columns(obs: pd.DataFrame, spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Columns of the authors' own, which the Census leaves out: every dataset has its cell-type labels
    (`author_cell_type`), droplet datasets their sequencing libraries (`library_id`)."""
    obs["author_cell_type"] = pd.Categorical(
        obs["cell_type"].astype(str).map(lambda label: AUTHOR_LABELS.get(label, label))
    )
    if "10x" in ontology.label(spec.assay):
        rng = rng_for(seed, spec.content_stem, "libraries")
        libraries = rng.integers(1, 3, len(obs))
        obs["library_id"] = pd.Categorical(obs["donor_id"].astype(str) + [f"-L{n}" for n in libraries])
    return obs


def make_var(spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Gene metadata as the portal writes it; spike-ins get the ERCC reference."""
    genes = panel_genes(spec, seed)
    table = gene_table(spec.organism, schema_major(spec.schema)).loc[genes]
    var = pd.DataFrame(index=pd.Index(genes, name=None))
    var["feature_name"] = table["feature_name"].to_numpy()
    var["feature_reference"] = spec.organism
    var["feature_biotype"] = "gene"
    var["feature_length"] = table["feature_length"].to_numpy()
    var["feature_type"] = table["feature_type"].to_numpy()
    if spec.spike_ins:
        ercc = gene_table(SPIKE_INS).iloc[:N_SPIKE_INS]
        spikes = pd.DataFrame(
            {
                "feature_name": ercc["feature_name"].to_numpy(),
                "feature_reference": SPIKE_INS,
                "feature_biotype": "spike-in",
                "feature_length": ercc["feature_length"].to_numpy(),
                "feature_type": "synthetic",
            },
            index=ercc.index,
        )
        var = pd.concat([var, spikes])
    for column in ("feature_name", "feature_reference", "feature_biotype", "feature_type"):
        var[column] = pd.Categorical(var[column].to_numpy())
    return var


def simulate_counts(spec: DatasetSpec, obs: pd.DataFrame, var: pd.DataFrame, seed: int) -> sp.csr_matrix:
    """Over-dispersed (gamma-Poisson) integer counts, cell-type specific, library sizes per cell."""
    rng = rng_for(seed, spec.content_stem, "counts")
    genes = var.index[var["feature_biotype"] == "gene"]
    profiles = cell_type_profiles(spec, pd.Index(genes), seed)
    type_index = {t: i for i, t in enumerate(spec.cell_types)}
    rows = obs["cell_type_ontology_term_id"].map(lambda t: type_index.get(t, 0)).to_numpy()
    depth = 20_000 if "Smart" in ontology.label(spec.assay) else 1_200
    library = rng.lognormal(np.log(depth), 0.45, len(obs))
    n_spikes = len(var) - len(genes)
    chunks = []
    for start in range(0, len(obs), CHUNK_CELLS):
        stop = min(start + CHUNK_CELLS, len(obs))
        mean = profiles[rows[start:stop]] * library[start:stop, None]
        mean *= rng.gamma(2.0, 0.5, size=mean.shape)
        counts = rng.poisson(mean).astype(np.float32)
        if n_spikes:
            counts = np.hstack([counts, rng.poisson(5.0, (stop - start, n_spikes)).astype(np.float32)])
        chunks.append(sp.csr_matrix(counts))
    return sp.vstack(chunks, format="csr")


def log_normalise(counts: sp.csr_matrix) -> sp.csr_matrix:
    """log1p of counts per 10,000, on the same sparsity pattern."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    normalised = sp.diags(scale.astype(np.float32)) @ counts
    normalised.data = np.log1p(normalised.data).astype(np.float32)
    return normalised.tocsr()


def embedding(obs: pd.DataFrame, seed: int) -> np.ndarray:
    """A UMAP-like 2-D embedding: one blob per cell type."""
    rng = rng_for(seed, "umap", len(obs))
    codes = obs["cell_type_ontology_term_id"].cat.codes.to_numpy()
    centres = rng.normal(0, 10, (codes.max() + 1, 2))
    return (centres[codes] + rng.normal(0, 1, (len(obs), 2))).astype(np.float32)


def make_anndata(spec: DatasetSpec, seed: int) -> ad.AnnData:
    obs = make_obs(spec, seed)
    var = make_var(spec, seed)
    counts = simulate_counts(spec, obs, var, seed)
    raw = ad.AnnData(X=counts, obs=pd.DataFrame(index=obs.index), var=var.copy())
    var["feature_is_filtered"] = False
    adata = ad.AnnData(X=log_normalise(counts), obs=obs, var=var, obsm={"X_umap": embedding(obs, seed)})
    adata.raw = raw
    if schema_major(spec.schema) != "5":
        adata.uns.update(
            {"organism_ontology_term_id": spec.organism, "organism": ontology.label(spec.organism)}
        )
    adata.uns.update(
        {
            "title": spec.title,
            "default_embedding": "X_umap",
            "schema_version": spec.schema,
            "schema_reference": "https://github.com/chanzuckerberg/single-cell-curation/blob/main/"
            f"schema/{spec.schema}/schema.md",
            "citation": citation(spec),
            "X_approximate_distribution": "normal",
        }
    )
    return adata


def citation(spec: DatasetSpec) -> str:
    """The citation the portal writes into a file it distributes, naming the dataset's version."""
    return (
        f"Dataset Version: https://datasets.cellxgene.cziscience.com/{spec.dataset_version_id}.h5ad curated "
        f"and distributed by CZ CELLxGENE Discover in Collection: https://cellxgene.cziscience.com/"
        f"collections/{spec.collection_id}"
    )


def write_dataset(spec: DatasetSpec, seed: int, path: Path) -> ad.AnnData:
    """Write one dataset's h5ad atomically; returns the AnnData written."""
    adata = make_anndata(spec, seed)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return adata
