"""The key the two routes are joined on: a cell is (`dataset_id`, `observation_joinid`), so each route must
hold the join id, one per cell of a dataset. Each route checks its own cells where it reads their obs (the
h5ad route while slicing, the census route in the store); that the same cells carry the same ids in both is
the validation's per-dataset key comparison (`cellquery.query.validate`)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from cellquery.errors import JoinKeyError

JOIN_KEY = "observation_joinid"
EXAMPLES = 3  # repeated values named per dataset


def dataset_label(dataset_id: str, title: str = "", key: str = "") -> str:
    """A dataset as messages name it: `dataset <id> ("<title>", <key>)`, with what is known."""
    details = ", ".join(part for part in (f'"{title}"' if title else "", key) if part)
    return f"dataset {dataset_id}" + (f" ({details})" if details else "")


def dataset_labels(manifest: pd.DataFrame) -> dict[str, str]:
    """Each manifest dataset's label, by dataset id."""
    rows = manifest.itertuples()
    return {row.dataset_id: dataset_label(row.dataset_id, row.title, row.key) for row in rows}


def require_join_key(columns: Iterable[str], where: str) -> None:
    """The obs of `where` (a dataset's h5ad, a census store) has the join key column."""
    if JOIN_KEY not in columns:
        raise JoinKeyError(
            f"{where}: obs has no {JOIN_KEY} column, the key the h5ad and census routes are joined on "
            "(Census releases before 1.3 lack it); choose a later release (source.version)"
        )


def check_unique(obs: pd.DataFrame, labels: dict[str, str], route: str) -> None:
    """Within each dataset of `obs` (its `dataset_id` and join key columns), every cell its own join key;
    else one line per dataset naming it, how many values repeat, and the first of them."""
    keys = pd.DataFrame({column: obs[column].astype(str).to_numpy() for column in ("dataset_id", JOIN_KEY)})
    repeated = keys[keys.duplicated(keep=False)]
    cells = keys["dataset_id"].value_counts()
    problems = [
        f"{labels.get(dataset_id, dataset_label(dataset_id))}: in the {route} route, "
        f"{_repeats(group[JOIN_KEY], cells[dataset_id])}; the routes are joined on it, one value per cell"
        for dataset_id, group in repeated.groupby("dataset_id")
    ]
    if problems:
        raise JoinKeyError("\n".join(problems))


def _repeats(values: pd.Series, cells: int) -> str:
    """`observation_joinid repeats: 2 values held by 5 of its 400 cells, e.g. ['a', 'b']`"""
    counts = values.value_counts()
    held = f"{len(counts)} value{'s' if len(counts) > 1 else ''} held by {counts.sum()} of its {cells} cells"
    return f"{JOIN_KEY} repeats: {held}, e.g. {sorted(counts.index)[:EXAMPLES]}"
