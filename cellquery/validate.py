"""Prove the two routes agree: the h5ad result (after the Census inclusion rules) against the census slice."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellquery import h5ad
from cellquery.inclusion import included_cells, included_genes
from cellquery.slicing import KEY_COLUMNS

EXAMPLES = 10  # differences listed per kind; the counts are always complete


def _examples(values) -> list:
    return sorted(map(str, values))[:EXAMPLES]


def _obs_differences(result_obs: pd.DataFrame, census_obs: pd.DataFrame, keys: pd.Index) -> dict:
    shared = [c for c in result_obs.columns if c in census_obs.columns and c not in KEY_COLUMNS]
    differences = {}
    for column in shared:
        ours = result_obs.loc[keys, column].astype(str).to_numpy()
        theirs = census_obs.loc[keys, column].astype(str).to_numpy()
        differing = np.flatnonzero(ours != theirs)
        if len(differing):
            differences[column] = {
                "cells": len(differing),
                "examples": [
                    {"cell": keys[i], "h5ad": ours[i], "census": theirs[i]} for i in differing[:EXAMPLES]
                ],
            }
    return differences


def _count_differences(
    result_path: Path, result: ad.AnnData, census: ad.AnnData, keys: pd.Index, organism: str
):
    """Cells whose raw counts differ on the genes both routes hold (compared in row blocks)."""
    genes = result.var.index[included_genes(result.var, organism)].intersection(census.var.index)
    result_columns = result.var.index.get_indexer(genes)
    census_columns = census.var.index.get_indexer(genes)
    result_rows = np.sort(result.obs.index.get_indexer(keys))
    census_rows = census.obs.index.get_indexer(result.obs.index[result_rows])
    census_counts = census.X[census_rows][:, census_columns].tocsr()
    differing, start = [], 0
    for block_rows, block in h5ad.row_blocks(result_path, result_rows, "X"):
        theirs = census_counts[start : start + len(block_rows)]
        diff = (block[:, result_columns] != theirs).tocsr()
        differing += [result.obs.index[block_rows[i]] for i in np.flatnonzero(np.diff(diff.indptr))]
        start += len(block_rows)
    return len(genes), differing


def compare_routes(result_path: Path, census_path: Path, organism: str, manifest: pd.DataFrame) -> dict:
    """The validation report: status, totals, per-dataset counts, and the differences when it failed."""
    result = ad.read_h5ad(result_path, backed="r")
    census = ad.read_h5ad(census_path)
    census_rules = included_cells(result.obs)
    included = result.obs.index[census_rules]
    duplicates = {
        "h5ad": _examples(result.obs.index[result.obs.index.duplicated()]),
        "census": _examples(census.obs.index[census.obs.index.duplicated()]),
    }
    missing = included.difference(census.obs.index)
    extra = census.obs.index.difference(included)
    matched = included.intersection(census.obs.index)
    obs_differences = _obs_differences(result.obs, census.obs, matched)
    n_genes, count_differences = _count_differences(result_path, result, census, matched, organism)
    per_dataset = []
    for row in manifest.itertuples():
        in_result = result.obs["dataset_id"].astype(str) == row.dataset_id
        per_dataset.append(
            {
                "dataset_id": row.dataset_id,
                "uid": row.uid,
                "key": row.key,
                "h5ad_cells": int(in_result.sum()),
                "h5ad_cells_census_rules": int((in_result.to_numpy() & census_rules).sum()),
                "census_cells": int((census.obs["dataset_id"].astype(str) == row.dataset_id).sum()),
            }
        )
    diff = {
        "duplicate_cells": duplicates,
        "missing_from_census": {"cells": len(missing), "examples": _examples(missing)},
        "only_in_census": {"cells": len(extra), "examples": _examples(extra)},
        "obs_values": obs_differences,
        "raw_counts": {"cells": len(count_differences), "examples": _examples(count_differences)},
    }
    failed = any(duplicates.values()) or len(missing) or len(extra) or obs_differences or count_differences
    report = {
        "status": "failed" if failed else "passed",
        "totals": {
            "h5ad_cells": result.n_obs,
            "h5ad_cells_census_rules": len(included),
            "census_cells": census.n_obs,
            "matched_cells": len(matched),
            "genes_compared": n_genes,
            "h5ad_genes": result.n_vars,
            "census_genes": census.n_vars,
        },
        "per_dataset": per_dataset,
    }
    if failed:
        report["diff"] = diff
    return report


def describe_failure(report: dict) -> str:
    """A readable summary of a failed report, one line per kind of difference."""
    diff = report["diff"]
    lines = ["the h5ad route and the census route disagree:"]
    for kind in ("missing_from_census", "only_in_census", "raw_counts"):
        if diff[kind]["cells"]:
            lines.append(
                f"  {kind.replace('_', ' ')}: {diff[kind]['cells']} cells, e.g. {diff[kind]['examples'][:3]}"
            )
    for column, detail in diff["obs_values"].items():
        example = detail["examples"][0]
        lines.append(
            f"  obs {column}: {detail['cells']} cells differ, e.g. {example['cell']}: "
            f"h5ad {example['h5ad']!r} vs census {example['census']!r}"
        )
    for route, cells in diff["duplicate_cells"].items():
        if cells:
            lines.append(f"  duplicate cells in the {route} route: {cells[:3]}")
    return "\n".join(lines)
