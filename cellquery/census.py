"""The census route: the equivalent slice from a Census SOMA store, read with the official API."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cellquery import ontology
from cellquery.atomic import atomic_path
from cellquery.criteria import Criterion, value_filter
from cellquery.slicing import KEY_COLUMNS

log = logging.getLogger(__name__)


def census_slice(
    store: str,
    criteria: list[Criterion],
    *,
    organism: str,
    dataset_ids: list[str],
    obs_columns: list[str],
    gene_ids: list[str] | None,
    out: Path,
) -> dict:
    """Write the census cells matching the criteria within the manifest's datasets; returns counts."""
    import cellxgene_census

    obs_filter = value_filter(criteria, dataset_ids)
    var_filter = f"feature_id in {sorted(gene_ids)!r}" if gene_ids is not None else None
    log.info("obs value_filter: %s", obs_filter)
    with cellxgene_census.open_soma(uri=store) as census:
        adata = cellxgene_census.get_anndata(
            census,
            organism=ontology.label(organism),
            obs_value_filter=obs_filter,
            var_value_filter=var_filter,
            obs_column_names=[*dict.fromkeys([*KEY_COLUMNS, *obs_columns])],
            X_name="raw",
        )
    keys = adata.obs["dataset_id"].astype(str) + ":" + adata.obs["observation_joinid"].astype(str)
    adata.obs.index = pd.Index(keys.to_numpy())
    adata.var = adata.var.set_index("feature_id", drop=False).rename_axis(None)
    adata.X = adata.X.astype(np.float32)
    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp)
    log.info("census slice: %d cells x %d genes", adata.n_obs, adata.n_vars)
    return {"cells": adata.n_obs, "genes": adata.n_vars, "value_filter": obs_filter}
