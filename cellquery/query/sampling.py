"""Corpus controls: a deterministic sample of the selected cells that both routes draw alike, apart.

A cell's draw is a hash of (seed, `dataset_id`, `observation_joinid`), so the h5ad route and the census
route pick the same cells without sharing anything but the spec. `fraction` keeps the cells whose draw is
below it; `max_cells` then keeps, per value of the `per` columns, the cells with the lowest draws. The h5ad
route also holds cells the Census leaves out (`cellquery.cellxgene.inclusion`): they rank after the Census'
cells of their group, so the cells both routes hold are the same sample in each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xxhash


def draws(obs: pd.DataFrame, seed: int) -> np.ndarray:
    """Each cell's draw, uniform in [0, 1): a hash of the seed and the cell's keys."""
    keys = zip(obs["dataset_id"].astype(str), obs["observation_joinid"].astype(str), strict=True)
    hashes = [xxhash.xxh64_intdigest(f"{dataset}/{joinid}", seed=seed) for dataset, joinid in keys]
    return np.asarray(hashes, dtype=np.uint64) / 2.0**64


def sampled(obs: pd.DataFrame, sample: dict | None, in_census: np.ndarray | None = None) -> np.ndarray:
    """Which cells of `obs` the sample keeps; `in_census` marks the cells the Census holds (default all)."""
    if not sample:
        return np.ones(len(obs), dtype=bool)
    draw = draws(obs, sample["seed"])
    keep = draw < sample.get("fraction", 1.0)
    if "max_cells" in sample:
        keep &= _lowest_per_group(obs, draw, keep, sample, in_census)
    return keep


def _lowest_per_group(
    obs: pd.DataFrame, draw: np.ndarray, kept: np.ndarray, sample: dict, in_census: np.ndarray | None
) -> np.ndarray:
    """The `max_cells` kept cells of lowest draw per group, the Census' cells first."""
    per = sample.get("per", [])
    frame = pd.DataFrame({f"group {i}": obs[c].astype(str).to_numpy() for i, c in enumerate(per)})
    frame["later"] = False if in_census is None else ~np.asarray(in_census)
    frame["draw"], frame["kept"] = draw, kept
    ranked = frame[frame["kept"]].sort_values([*frame.columns[: len(per)], "later", "draw"])
    groups = ranked.groupby(list(ranked.columns[: len(per)]), sort=False) if per else None
    rank = groups.cumcount() if groups is not None else pd.Series(np.arange(len(ranked)), ranked.index)
    chosen = np.zeros(len(obs), dtype=bool)
    chosen[ranked.index[rank.to_numpy() < sample["max_cells"]]] = True
    return chosen


VALIDATION_SEED = 0  # a sampled validation's draw of bands: the same cells on every run and machine


def compared_rows(joinids: np.ndarray, band: int, validation: dict | None) -> np.ndarray:
    """The census cells whose counts a validation compares value by value: every cell (`mode: full`), or
    (`mode: sampled`) the cells of whole bands of `band` consecutive soma_joinids (a row of the store's X
    tiles, read whole or not at all: a scattered sample would read every tile) whose draw falls under
    `fraction`, at least one band."""
    if not validation or validation["mode"] == "full":
        return np.ones(len(joinids), dtype=bool)
    bands = np.asarray(joinids) // band
    held = np.unique(bands)
    draw = np.array([xxhash.xxh64_intdigest(str(b), seed=VALIDATION_SEED) for b in held]) / 2.0**64
    chosen = (
        held[draw < validation["fraction"]]
        if (draw < validation["fraction"]).any()
        else held[[draw.argmin()]]
    )
    return np.isin(bands, chosen)
