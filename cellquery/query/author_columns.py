"""The authors' own obs columns: kept from the source h5ads, which hold them (the census does not)."""

from __future__ import annotations

import h5py
import pandas as pd

from cellquery.errors import SpecError
from cellquery.spec.query_spec import CENSUS_OBS_COLUMNS, QuerySpec, suggest


def check_author_columns(spec: QuerySpec, table: pd.DataFrame, storage: dict) -> None:
    """Every author column of `obs_columns` must be in every dataset the query selects cells from: one line
    per column naming the datasets that lack it. Reads the obs column names of each h5ad (no counts)."""
    if not spec.author_columns:
        return
    holding = table[table["selected_cells"] > 0]
    present = {row["dataset_id"]: obs_column_names(row, storage) for _, row in holding.iterrows()}
    titles = dict(zip(holding["dataset_id"], holding["title"], strict=True))
    problems = []
    for column in spec.author_columns:
        lacking = [dataset for dataset, names in present.items() if column not in names]
        if lacking and len(lacking) == len(present):
            known = sorted(CENSUS_OBS_COLUMNS | set().union(*present.values()))
            problems.append(
                f"obs_columns: {column!r} is neither a census column nor a column of the "
                f"{len(present)} datasets the query selects cells from{suggest(column, known)}"
            )
        elif lacking:
            named = ", ".join(f"{titles[d]!r} ({d})" for d in lacking)
            problems.append(
                f"obs_columns: {column!r}, an author column, is missing from {len(lacking)} of the "
                f"{len(present)} datasets the query selects cells from: {named}; "
                "leave it out or narrow the query"
            )
    if problems:
        raise SpecError(*problems)


def obs_column_names(entry, storage: dict) -> set[str]:
    """The obs columns of one artifact's h5ad: read in place, from the cache, or streamed (a few blocks)."""
    from cellquery.query.artifacts import cached_path, remote_path
    from cellquery.storage.settings import filesystem, is_remote, patience_of, region_of
    from cellquery.storage.streaming import streamed

    if not is_remote(entry["path"]):
        return _names(entry["path"])
    cached = cached_path(entry, storage)
    if cached.exists() and cached.stat().st_size == int(entry["size"]):
        return _names(cached)
    fs = filesystem(entry["storage_root"], storage["object_storage"], region=region_of(entry))
    label = f"artifact {entry['uid']} ({entry['key']}): obs columns"
    names, _ = streamed(_names, fs, remote_path(entry), label, patience_of(storage))
    return names


def _names(source) -> set[str]:
    with h5py.File(source, "r") as f:
        return {str(name) for name in f["obs"].attrs.get("column-order", [])}
