"""Step plan: what a run will read and hold, told before it reads any h5ad."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cellquery.files.atomic import atomic_path
from cellquery.files.layout import slice_content, slice_path
from cellquery.query.runfiles import READ_PLAN, read_manifest, read_query
from cellquery.query.shards import slice_is_current
from cellquery.spec.query_spec import QuerySpec


def write_plan(query_path: Path, manifest_path: Path, out: Path) -> str:
    """What a run will read and the cells and genes it will hold; written as TSV, returned as text.

    Reads no h5ad: sizes and cell counts come from the registry (`n_obs`: all cells of the file) and from
    the census store (`selected_cells`: the cells the query selects, after the Census inclusion rules;
    `sampled_cells`: those its `sample` keeps).
    """
    from cellquery.query.coverage import describe as describe_coverage
    from cellquery.query.value_counts import describe_values

    query, table = read_query(query_path), read_manifest(manifest_path)
    table = _with_current_slices(table, query)
    sampled = ["sampled_cells"] if "sampled_cells" in table else []
    columns = ["dataset_id", "title", "key", "uid", "size", "n_obs", "selected_cells", *sampled]
    plan = table[[*columns, *READ_PLAN, "to_fetch"]]
    with atomic_path(out) as tmp:
        plan.to_csv(tmp, sep="\t", index=False)
    collection = query["collection"]
    lines = [
        f"plan for {query['name']}: {len(plan)} datasets of {collection['key']} {collection['version']}",
        f"  {'dataset':<44} {'dataset id':<36} {'MB':>8} {'cells in file':>13} {'cells selected':>14}"
        + (f" {'after sample':>12}" if sampled else ""),
        *(
            f"  {_clip(row.title, 44):<44} {row.dataset_id:<36} {row.size / 1e6:>8.1f} {row.n_obs:>13,} "
            f"{row.selected_cells:>14,}" + (f" {row.sampled_cells:>12,}" if sampled else "")
            for row in plan.itertuples()
        ),
        f"  {'total':<81} {plan['size'].sum() / 1e6:>8.1f} {plan['n_obs'].sum():>13,} "
        f"{plan['selected_cells'].sum():>14,}" + (f" {plan['sampled_cells'].sum():>12,}" if sampled else ""),
        *(f"  {line}" for line in describe_values(query.get("value_counts", []))),
        *(f"  warning: {line}" for line in query.get("warnings", [])),
        *_read_plan_lines(plan, query),
        *_census_lines(query, list(plan["dataset_id"]), int(plan["selected_cells"].sum())),
        *(
            f"  {line}"
            for line in describe_coverage(query["gene_coverage"], query["organism"], query["gene_join"])
        ),
    ]
    return "\n".join(lines)


def _with_current_slices(table: pd.DataFrame, query: dict) -> pd.DataFrame:
    """An artifact in object storage whose slice is already made is not read again: `sliced`, 0 bytes."""
    digest = QuerySpec(Path(query["name"]), query["spec"]).cells_digest
    remote = table["fetch"] != "local"
    contents = table.apply(slice_content, axis=1) if len(table) else pd.Series(dtype=str)
    current = remote & contents.map(
        lambda content: slice_is_current(slice_path(digest, content), content, digest)
    )
    table.loc[current, "fetch"] = "sliced"
    table.loc[current, ["download_bytes", "stream_bytes", "to_fetch"]] = 0
    return table


def _read_plan_lines(plan: pd.DataFrame, query: dict) -> list[str]:
    """How the artifacts in object storage are read, with the bytes each way would move."""
    remote = plan[plan["fetch"] != "local"]
    total = f"  to fetch: {plan['to_fetch'].sum() / 1e6:.1f} MB"
    if remote.empty:
        return [f"{total} (files in local storage are read in place)"]
    from cellquery.query.resolve import fetch_mode

    mode = fetch_mode(query)
    return [
        f"  read from object storage (fetch: {mode}; download MB is 0 for a copy already cached, "
        "sliced: the slice is made, nothing is read):",
        f"  {'dataset':<44} {'read':>6} {'download MB':>12} {'stream MB':>10}",
        *(
            f"  {_clip(row.title, 44):<44} {row.fetch:>6} {row.download_bytes / 1e6:>12.1f} "
            f"{row.stream_bytes / 1e6:>10.1f}"
            for row in remote.itertuples()
        ),
        f"{total} (stream MB: estimated)",
    ]


def _census_lines(query: dict, dataset_ids: list[str], cells: int) -> list[str]:
    """What the census route will read from its store, at most: X's stored values of the selected cells
    (12 bytes each uncompressed: a column index and a float32; the store compresses them)."""
    from cellquery.query.census_route import selected_values
    from cellquery.query.runfiles import criteria_of

    store, settings = query["census"], query["storage"]["object_storage"]
    values = selected_values(store, criteria_of(query), query["organism"], dataset_ids, settings)
    if values is None:
        return [f"  census route: X of {cells:,} cells from {store['key']}"]
    return [
        f"  census route: X of {cells:,} cells from {store['key']}, up to {values:,} stored values "
        f"(about {values * 12 / 1e6:.1f} MB before the store's compression)"
    ]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
