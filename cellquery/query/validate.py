"""Prove the two routes agree: the h5ad result (after the Census inclusion rules) against the census slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellquery.cellxgene.inclusion import included_genes
from cellquery.cellxgene.joinkey import JOIN_KEY, check_unique, dataset_label, dataset_labels
from cellquery.files import h5ad
from cellquery.spec.query_spec import KEY_COLUMNS

EXAMPLES = 10  # differences listed per kind; the counts are always complete
# normalized values agree within this relative difference: the Census keeps 15 of float32's 23 mantissa
# bits (rounded half to even, at most 2**-16 ~ 1.5e-5 off), cellquery all of them
NORMALIZED_RTOL = 1e-4
TOTALS_RTOL = (
    1e-9  # a cell's raw_sum, summed in another order by the builder (whole counts: exact in float64)
)


def _examples(values) -> list:
    return sorted(map(str, values))[:EXAMPLES]


def _obs_differences(result_obs: pd.DataFrame, census_obs: pd.DataFrame, keys: pd.Index) -> dict:
    shared = [c for c in result_obs.columns if c in census_obs.columns and c not in KEY_COLUMNS]
    differences = {}
    our_rows, their_rows = result_obs.index.get_indexer(keys), census_obs.index.get_indexer(keys)
    for column in shared:
        ours = _as_text(result_obs[column], our_rows)
        theirs = _as_text(census_obs[column], their_rows)
        differing = np.flatnonzero(ours != theirs)
        if len(differing):
            differences[column] = {
                "cells": len(differing),
                "examples": [
                    {"cell": keys[i], "h5ad": ours[i], "census": theirs[i]} for i in differing[:EXAMPLES]
                ],
            }
    return differences


def _as_text(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """These rows' values as text, as `astype(str)` writes them (a category's text made once)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()[rows]
        labels = np.append(column.cat.categories.astype(str).to_numpy(dtype=object), "nan")
        return labels[codes]  # code -1 (missing) is the last label
    return column.iloc[rows].astype(str).to_numpy()


def _count_differences(
    result_path: Path,
    census_path: Path,
    frames: dict[str, pd.DataFrame],
    keys: pd.Index,
    organism: str,
    matrix: str = "X",
) -> tuple[int, list[str]]:
    """Cells whose values in `matrix` (X: raw counts, exactly; a layer: within NORMALIZED_RTOL and on the
    same coordinates) differ on the genes both routes hold, compared one row block at a time."""
    result_var, census_var = frames["result_var"], frames["census_var"]
    genes = result_var.index[included_genes(result_var, organism)].intersection(census_var.index)
    result_columns = result_var.index.get_indexer(genes)
    census_columns = census_var.index.get_indexer(genes)
    result_cells, census_cells = frames["result_obs"].index, frames["census_obs"].index
    rows = np.sort(result_cells.get_indexer(keys))
    differing = []
    for block_rows, block in h5ad.row_blocks(result_path, rows, matrix):
        names = result_cells[block_rows]
        theirs = h5ad.read_rows(census_path, census_cells.get_indexer(names), matrix)[:, census_columns]
        differs = _differing_rows(block[:, result_columns], theirs, exact=matrix == "X")
        differing += list(names[differs])
    return len(genes), differing


def _differing_rows(ours: sp.csr_matrix, theirs: sp.csr_matrix, *, exact: bool) -> np.ndarray:
    """Rows that differ: in any value (exact), or beyond the relative tolerance (a value one side lacks
    always is)."""
    differs = (ours != theirs) if exact else (abs(ours - theirs) > abs(theirs) * NORMALIZED_RTOL)
    return np.flatnonzero(np.diff(sp.csr_matrix(differs).indptr))


def _value_compared(census_path: Path, census_obs: pd.DataFrame) -> pd.Index:
    """The census cells whose counts the census route read (all but in a sampled validation)."""
    from cellquery.query.census_route import READ_KEY

    compared = h5ad.read_uns(census_path).get(READ_KEY, {}).get("value_compared")
    return census_obs.index if compared is None else census_obs.index[np.asarray(compared, dtype=bool)]


def _total_differences(totals: pd.DataFrame, census_obs: pd.DataFrame, keys: pd.Index) -> list[str]:
    """Cells whose raw_sum or nnz over the Census' genes, counted from the h5ad, differ from the census'."""
    ours, theirs = totals.loc[keys], census_obs.loc[keys]
    sums = ~np.isclose(ours["raw_sum"].to_numpy(), theirs["raw_sum"].to_numpy(float), rtol=TOTALS_RTOL)
    nonzero = ours["nnz"].to_numpy() != theirs["nnz"].to_numpy()
    return list(keys[sums | nonzero])


def _per_dataset(
    manifest: pd.DataFrame, result_obs: pd.DataFrame, census_obs: pd.DataFrame, census_rules: np.ndarray
) -> list[dict]:
    """Cells per matched dataset in each route (counted once per route, not once per dataset)."""
    result_ids = result_obs["dataset_id"].astype(str)
    counts = {
        "h5ad_cells": result_ids.value_counts(),
        "h5ad_cells_census_rules": result_ids[census_rules].value_counts(),
        "census_cells": census_obs["dataset_id"].astype(str).value_counts(),
    }
    return [
        {
            "dataset_id": row.dataset_id,
            "uid": row.uid,
            "key": row.key,
            **{name: int(count.get(row.dataset_id, 0)) for name, count in counts.items()},
        }
        for row in manifest.itertuples()
    ]


def _key_differences(
    result_obs: pd.DataFrame, census_obs: pd.DataFrame, missing: pd.Index, extra: pd.Index, labels: dict
) -> dict:
    """Per dataset with cells only one route holds: the dataset's label, and those cells' join keys."""
    differences: dict[str, dict] = {}
    for route, obs, cells in (("h5ad", result_obs, missing), ("census", census_obs, extra)):
        for dataset_id, keys in _join_keys(obs, cells).items():
            entry = differences.setdefault(
                dataset_id, {"dataset": labels.get(dataset_id, dataset_label(dataset_id))}
            )
            entry[f"only_in_{route}"] = keys
    return dict(sorted(differences.items()))


def _join_keys(obs: pd.DataFrame, cells: pd.Index) -> dict[str, dict]:
    """The join keys of these cells per dataset: how many, and the first."""
    chosen = obs.loc[cells]
    return {
        str(dataset_id): {"cells": len(keys), "examples": _examples(keys)}
        for dataset_id, keys in chosen.groupby("dataset_id", observed=True)[JOIN_KEY]
    }


def _frames(result_path: Path, census_path: Path) -> dict[str, pd.DataFrame]:
    """Obs and var of both routes; the matrices stay on disk."""
    return {
        f"{route}_{axis}": h5ad.read_frame(path, axis)
        for route, path in (("result", result_path), ("census", census_path))
        for axis in ("obs", "var")
    }


def _gene_differences(result_var: pd.DataFrame, organism: str, expected: pd.Index | None) -> dict:
    """Genes of the organism the result holds against those the join must keep (from the census store)."""
    if expected is None:
        return {}
    held = result_var.index[included_genes(result_var, organism)]
    missing, unexpected = expected.difference(held), held.difference(expected)
    if not len(missing) and not len(unexpected):
        return {}
    return {
        "missing": {"genes": len(missing), "examples": _examples(missing)},
        "unexpected": {"genes": len(unexpected), "examples": _examples(unexpected)},
    }


def compare_routes(
    result_path: Path,
    census_path: Path,
    organism: str,
    manifest: pd.DataFrame,
    census_rules: np.ndarray,
    expected_genes: pd.Index | None = None,
    layers: list[str] = (),
    validation: dict | None = None,
    totals: pd.DataFrame | None = None,
) -> dict:
    """The validation report: status, totals, per-dataset counts, and the differences when it failed.

    `census_rules` marks the result's cells the Census inclusion rules keep (computed from the slices,
    which hold the columns the rules read); `expected_genes` are the genes the gene join must keep. Cells
    are matched on their keys: a key repeated within a dataset (two artifacts of one dataset, say) stops
    the comparison with a `JoinKeyError` naming it. A sampled `validation` compares value by value the counts
    of the cells the census route read (`census_route.census_slice`), and every cell's raw_sum and nnz
    (`totals`, as the slices counted them from the h5ads) with the census'.
    """
    frames = _frames(result_path, census_path)
    result_obs, census_obs = frames["result_obs"], frames["census_obs"]
    labels = dataset_labels(manifest)
    check_unique(result_obs, labels, "h5ad")
    check_unique(census_obs, labels, "census")
    included = result_obs.index[census_rules]
    missing = included.difference(census_obs.index)
    extra = census_obs.index.difference(included)
    matched = included.intersection(census_obs.index)
    obs_differences = _obs_differences(result_obs, census_obs, matched)
    valued = matched.intersection(_value_compared(census_path, census_obs))
    n_genes, count_differences = _count_differences(result_path, census_path, frames, valued, organism)
    layer_differences = {
        layer: _count_differences(result_path, census_path, frames, valued, organism, f"layers/{layer}")[1]
        for layer in layers
    }
    total_differences = _total_differences(totals, census_obs, matched) if totals is not None else []
    per_dataset = _per_dataset(manifest, result_obs, census_obs, census_rules)
    gene_differences = _gene_differences(frames["result_var"], organism, expected_genes)
    diff = {
        "genes": gene_differences,
        "missing_from_census": {"cells": len(missing), "examples": _examples(missing)},
        "only_in_census": {"cells": len(extra), "examples": _examples(extra)},
        "join_keys": _key_differences(result_obs, census_obs, missing, extra, labels),
        "obs_values": obs_differences,
        "raw_counts": {"cells": len(count_differences), "examples": _examples(count_differences)},
        "cell_totals": {"cells": len(total_differences), "examples": _examples(total_differences)},
        **{
            f"layer {layer}": {"cells": len(cells), "examples": _examples(cells)}
            for layer, cells in layer_differences.items()
        },
    }
    failed = (
        len(missing)
        or len(extra)
        or obs_differences
        or count_differences
        or total_differences
        or any(layer_differences.values())
        or gene_differences
    )
    report = {
        "status": "failed" if failed else "passed",
        "totals": {
            "h5ad_cells": len(result_obs),
            "h5ad_cells_census_rules": len(included),
            "census_cells": len(census_obs),
            "matched_cells": len(matched),
            "cells_compared_value_by_value": len(valued),
            "cells_totals_compared": len(matched) if totals is not None else 0,
            "genes_compared": n_genes,
            "layers_compared": {layer: f"within a relative {NORMALIZED_RTOL:g}" for layer in layers},
            "h5ad_genes": len(frames["result_var"]),
            "census_genes": len(frames["census_var"]),
        },
        "per_dataset": per_dataset,
        "validation": validation or {"mode": "full"},
    }
    if failed:
        report["diff"] = diff
    return report


def describe_failure(report: dict) -> str:
    """A readable summary of a failed report, one line per kind of difference."""
    diff = report["diff"]
    lines = ["the h5ad route and the census route disagree:"]
    lines += _cell_lines(diff, ["missing_from_census", "only_in_census"])
    lines += [_key_line(detail) for detail in diff["join_keys"].values()]
    lines += _cell_lines(diff, ["raw_counts", "cell_totals", *(k for k in diff if k.startswith("layer "))])
    for column, detail in diff["obs_values"].items():
        example = detail["examples"][0]
        lines.append(
            f"  obs {column}: {detail['cells']} cells differ, e.g. {example['cell']}: "
            f"h5ad {example['h5ad']!r} vs census {example['census']!r}"
        )
    for kind, detail in diff["genes"].items():
        if detail["genes"]:
            lines.append(f"  genes {kind} (gene join): {detail['genes']}, e.g. {detail['examples'][:3]}")
    return "\n".join(lines)


def _cell_lines(diff: dict, kinds: list[str]) -> list[str]:
    """`  missing from census: 3 cells, e.g. [...]`, for each of these kinds of difference found."""
    return [
        f"  {kind.replace('_', ' ')}: {diff[kind]['cells']} cells, e.g. {diff[kind]['examples'][:3]}"
        for kind in kinds
        if diff[kind]["cells"]
    ]


def _key_line(detail: dict) -> str:
    """One dataset's cells only one route holds, by join key: `  dataset <id> (...): observation_joinid
    only in the h5ad route: 3, e.g. [...]; only in the census route: 1, e.g. [...]`"""
    parts = [
        f"only in the {route} route: {keys['cells']}, e.g. {keys['examples'][:3]}"
        for route in ("h5ad", "census")
        if (keys := detail.get(f"only_in_{route}"))
    ]
    return f"  {detail['dataset']}: {JOIN_KEY} {'; '.join(parts)}"


def unchecked(totals: dict) -> str:
    """What a validation does not vouch for: the result's cells outside the Census' inclusion rules (the
    census route holds none of them), as a clause to append ("" when there are none)."""
    outside = totals["h5ad_cells"] - totals["h5ad_cells_census_rules"]
    if not outside:
        return ""
    return f"; {outside:,} cells outside the Census' inclusion rules come from the h5ads unchecked"
