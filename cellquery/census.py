"""The census route: the equivalent slice from a Census SOMA store, streamed to an h5ad in row blocks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellquery import h5ad, ontology
from cellquery.atomic import atomic_path
from cellquery.criteria import Criterion, value_filter
from cellquery.errors import SourceError
from cellquery.faults import failpoint
from cellquery.jobs import at_work
from cellquery.runfiles import criteria_of, read_manifest, read_query
from cellquery.sampling import sampled
from cellquery.slicing import result_columns
from cellquery.storage import soma_context, tiledb_config

log = logging.getLogger(__name__)

X_NAME = "raw"
ROW_BLOCK = 2048  # cells per read from X: TileDB holds several times the block while reading


def experiment_name(organism: str) -> str:
    """The Census experiment of an organism: `NCBITaxon:9606` -> `homo_sapiens`."""
    return ontology.label(organism).lower().replace(" ", "_")


@contextmanager
def open_store(store: dict, settings: dict | None = None) -> Iterator:
    """A census store (`query.json`'s `census`: its path and storage root), opened for reading: local, or in
    object storage with the endpoint, region and credentials of its root (`cellquery.storage`). A store in
    object storage that cannot be read (the server unreachable, say) raises a `SourceError` naming it."""
    import tiledbsoma as soma

    context = soma_context(store.get("root"), settings)
    try:
        with soma.open(store["path"], mode="r", soma_type=soma.Collection, context=context) as census:
            yield census
    except soma.SOMAError as error:
        if context is None:
            raise
        endpoint = tiledb_config(store["root"], settings).get(
            "vfs.s3.endpoint_override", "its default endpoint"
        )
        reason = str(error).strip().splitlines()[0].rpartition("Details: ")[2]
        raise SourceError(f"census store {store['path']} at {endpoint} cannot be read: {reason}") from None


def cells_per_dataset(
    store: dict,
    criteria: list[Criterion],
    organism: str,
    dataset_ids: list[str],
    settings: dict | None = None,
    sample: dict | None = None,
) -> dict[str, int]:
    """How many census cells of each dataset match the criteria (and the `sample` keeps): reads the
    dataset ids (with a sample, the cells' keys and its `per` columns), no counts."""
    columns = ["dataset_id", *(["observation_joinid", *sample.get("per", [])] if sample else [])]
    with open_store(store, settings) as census:
        obs = census["census_data"][experiment_name(organism)].obs
        table = obs.read(
            column_names=[*dict.fromkeys(columns)], value_filter=value_filter(criteria, dataset_ids)
        ).concat()
    obs = table.to_pandas()
    counts = obs["dataset_id"].astype(str)[sampled(obs, sample)].value_counts()
    return {dataset_id: int(counts.get(dataset_id, 0)) for dataset_id in dataset_ids}


def selected_positions(
    store: dict,
    criteria: list[Criterion],
    organism: str,
    dataset_ids: list[str],
    settings: dict | None = None,
) -> dict[str, np.ndarray]:
    """Where each dataset's selected cells lie in its file, as fractions of its census cells: the Census
    keeps a dataset's cells in the order of its h5ad. Reads two obs columns, no counts."""
    with open_store(store, settings) as census:
        obs = census["census_data"][experiment_name(organism)].obs
        every = obs.read(
            column_names=["soma_joinid", "dataset_id"], value_filter=value_filter([], dataset_ids)
        )
        chosen = obs.read(column_names=["soma_joinid"], value_filter=value_filter(criteria, dataset_ids))
        every, chosen = every.concat().to_pandas(), chosen.concat()["soma_joinid"].to_numpy()
    every = every.sort_values("soma_joinid")
    datasets = every.groupby("dataset_id", observed=True)
    every["position"] = datasets.cumcount() / datasets["soma_joinid"].transform("size")
    picked = every[every["soma_joinid"].isin(chosen)]
    found = {str(d): group["position"].to_numpy() for d, group in picked.groupby("dataset_id", observed=True)}
    return {dataset_id: found.get(dataset_id, np.array([])) for dataset_id in dataset_ids}


def gene_counts(
    store: dict, organism: str, dataset_ids: list[str], settings: dict | None = None
) -> pd.Series:
    """Per gene (feature id) of the store, how many of the datasets measure it; reads the presence matrix."""
    with open_store(store, settings) as census:
        rna = census["census_data"][experiment_name(organism)].ms["RNA"]
        feature_ids = rna.var.read(column_names=["soma_joinid", "feature_id"]).concat().to_pandas()
        counts = np.zeros(int(feature_ids["soma_joinid"].max()) + 1 if len(feature_ids) else 0, dtype=int)
        joinids = _dataset_joinids(census, dataset_ids)
        if len(joinids):
            presence = rna["feature_dataset_presence_matrix"].read(coords=(joinids,)).tables().concat()
            columns = presence["soma_dim_1"].to_numpy()[presence["soma_data"].to_numpy()]
            counts += np.bincount(columns, minlength=len(counts))
    return pd.Series(counts[feature_ids["soma_joinid"]], index=feature_ids["feature_id"].to_numpy())


def _dataset_joinids(census, dataset_ids: list[str]) -> np.ndarray:
    """The rows of `census_info/datasets` (and of the presence matrix) of the given datasets."""
    if not dataset_ids:
        return np.array([], dtype=np.int64)
    quoted = ", ".join(repr(str(d)) for d in dataset_ids)
    table = census["census_info"]["datasets"].read(
        column_names=["soma_joinid"], value_filter=f"dataset_id in [{quoted}]"
    )
    return np.sort(table.concat()["soma_joinid"].to_numpy())


def census_slice(
    store: dict,
    criteria: list[Criterion],
    *,
    organism: str,
    dataset_ids: list[str],
    obs_columns: list[str],
    gene_ids: list[str] | None,
    out: Path,
    settings: dict | None = None,
    layers: list[str] = (),
    sample: dict | None = None,
    uns: dict | None = None,
) -> dict:
    """Write the census cells matching the criteria within the manifest's datasets (those the `sample`
    keeps) with X/raw and the `layers` asked for; returns counts.

    The same query `cellxgene_census.get_anndata` runs, but obs, var and X are read separately and X is
    written block by block, so memory holds one block of counts rather than the whole slice. `obs_columns`
    the census lacks (the authors' own) are left out.
    """
    import tiledbsoma as soma

    obs_filter = value_filter(criteria, dataset_ids)
    var_filter = f"feature_id in {sorted(gene_ids)!r}" if gene_ids is not None else None
    log.info("obs value_filter: %s", obs_filter)
    with open_store(store, settings) as census:
        experiment = census["census_data"][experiment_name(organism)]
        columns = [c for c in result_columns(obs_columns) if c in experiment.obs.schema.names]
        read = [*dict.fromkeys(["soma_joinid", *columns, *(sample or {}).get("per", [])])]
        with experiment.axis_query(
            "RNA",
            obs_query=soma.AxisQuery(value_filter=obs_filter),
            var_query=soma.AxisQuery(value_filter=var_filter),
        ) as query:
            obs = query.obs(column_names=read).concat().to_pandas()
            var = query.var().concat().to_pandas()
        obs = obs[sampled(obs, sample)].sort_values("soma_joinid")
        var = var.sort_values("soma_joinid")
        matrices = {"X": experiment.ms["RNA"].X[X_NAME]} | {n: experiment.ms["RNA"].X[n] for n in layers}
        with atomic_path(out) as tmp:
            frames = _obs_frame(obs, columns), _var_frame(var)
            blocks = _row_blocks(matrices, obs, var, every_gene=var_filter is None)
            h5ad.write_streamed(tmp, *frames, blocks, uns=uns, layers=layers)
            failpoint("census")
    log.info("census slice: %d cells x %d genes", len(obs), len(var))
    return {"cells": len(obs), "genes": len(var), "value_filter": obs_filter}


def _row_blocks(matrices: dict, obs: pd.DataFrame, var: pd.DataFrame, every_gene: bool):
    """Per block of the selected cells x genes, in soma_joinid order, the CSR block of each matrix
    (`every_gene`: the var query selected all genes, so whole rows are read)."""
    cells, genes = obs["soma_joinid"].to_numpy(), var["soma_joinid"].to_numpy()
    if len(cells) and not len(genes):
        yield {name: sp.csr_matrix((len(cells), 0), dtype=np.float32) for name in matrices}
        return
    column_of = _positions(genes)
    for start in range(0, len(cells), ROW_BLOCK):
        block = cells[start : start + ROW_BLOCK]
        coords = (block,) if every_gene else (block, genes)
        yield {name: _read_block(matrix, coords, column_of, len(genes)) for name, matrix in matrices.items()}


def _read_block(matrix, coords: tuple, column_of: np.ndarray, n_genes: int) -> sp.csr_matrix:
    cells = coords[0]
    table = matrix.read(coords=coords).tables().concat()
    rows = _positions(cells - cells[0])[table["soma_dim_0"].to_numpy() - cells[0]]
    columns = column_of[table["soma_dim_1"].to_numpy()]
    values = table["soma_data"].to_numpy()
    return sp.csr_matrix((values, (rows, columns)), shape=(len(cells), n_genes), dtype=np.float32)


def _positions(joinids: np.ndarray) -> np.ndarray:
    """An array mapping each of these (non-negative, distinct) soma_joinids to its position among them: a
    lookup by index, where a binary search per value took a third of the slice's time."""
    lookup = np.empty(int(joinids.max()) + 1 if len(joinids) else 0, dtype=np.int64)
    lookup[joinids] = np.arange(len(joinids))
    return lookup


def _obs_frame(obs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Obs named `<dataset_id>:<observation_joinid>`, the key the h5ad route uses."""
    keys = obs["dataset_id"].astype(str) + ":" + obs["observation_joinid"].astype(str)
    return h5ad.without_unused_categories(obs[columns].set_index(pd.Index(keys.to_numpy())))


def _var_frame(var: pd.DataFrame) -> pd.DataFrame:
    var = var.drop(columns="soma_joinid").astype({"feature_type": "category"})
    return var.set_index("feature_id", drop=False).rename_axis(None)


def census_route(query_path: Path, manifest_path: Path, out: Path) -> None:
    """Step census: the query's cells from the census store (backend c), into `out`."""
    from cellquery.provenance import UNS_KEY, provenance

    at_work()
    query, manifest = read_query(query_path), read_manifest(manifest_path)
    census_slice(
        query["census"],
        criteria_of(query),
        organism=query["organism"],
        dataset_ids=list(manifest["dataset_id"]),
        obs_columns=query["obs_columns"],
        gene_ids=query["gene_ids"],
        out=out,
        settings=query["storage"]["object_storage"],
        layers=query["layers"],
        sample=query["sample"],
        uns={UNS_KEY: provenance(query, manifest, "census")},
    )
