"""Samples drawn apart agree: draws are a hash of the cell's keys, caps rank the Census' cells first."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellquery.query.sampling import draws, sampled


def cells(n: int, dataset: str = "d1") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "dataset_id": dataset,
            "observation_joinid": [f"j{i}" for i in range(n)],
            "cell_type": rng.choice(["T cell", "B cell", "NK"], n),
        }
    )


def test_a_draw_depends_on_the_cell_and_the_seed_only():
    obs = cells(500)
    shuffled = obs.sample(frac=1, random_state=1)
    assert np.array_equal(draws(shuffled, 3), pd.Series(draws(obs, 3), obs.index)[shuffled.index].to_numpy())
    assert not np.array_equal(draws(obs, 3), draws(obs, 4))
    assert draws(obs, 3).min() >= 0 and draws(obs, 3).max() < 1


def test_a_fraction_and_a_cap_per_value():
    obs = cells(3000)
    kept = sampled(obs, {"fraction": 0.5, "max_cells": 100, "per": ["cell_type"], "seed": 0})
    assert obs[kept]["cell_type"].value_counts().to_dict() == {"T cell": 100, "B cell": 100, "NK": 100}
    share = sampled(obs, {"fraction": 0.25, "seed": 0}).mean()
    assert 0.2 < share < 0.3
    assert sampled(obs, {"max_cells": 7, "seed": 0}).sum() == 7


def test_the_census_cells_of_a_group_are_drawn_as_the_census_draws_them():
    """The h5ad route also holds cells the Census leaves out: its sample, restricted to the Census' cells,
    equals the sample the census route draws from its cells alone."""
    obs = cells(2000)
    in_census = np.random.default_rng(5).random(len(obs)) < 0.7
    sample = {"max_cells": 50, "per": ["cell_type"], "seed": 9}
    h5ad_route = sampled(obs, sample, in_census)
    census_route = sampled(obs[in_census].reset_index(drop=True), sample)
    assert np.array_equal(obs.index[h5ad_route & in_census], obs.index[in_census][census_route])
    few = {"max_cells": 1000, "per": ["cell_type"], "seed": 9}  # more than the Census holds: the rest fill in
    assert sampled(obs, few, in_census).sum() == len(obs) and sampled(obs, None).all()
