"""The validation pass over a store just written (as the builder's `validate_soma.py`, from the store's own
tables and array metadata, without rereading the h5ads): every count the store states about itself agrees
with its cells, and each experiment holds the cells the inclusion rules chose."""

from __future__ import annotations

import pandas as pd
import tiledbsoma as soma

from cellquery.store.experiment import OBS_COLUMNS

OBS_READ = ["soma_joinid", "dataset_id", "is_primary_data", "nnz", "n_measured_vars"]


def store_problems(uri: str, included_cells: dict[str, int]) -> list[str]:
    """What is wrong with the store at `uri`, one line each ([] when it is sound); `included_cells`: per
    experiment, the cells the inclusion rules chose for it."""
    with soma.Collection.open(uri) as root:
        info = {name: _table(root["census_info"][name]) for name in ("summary", "datasets", "organisms")}
        counts = _table(root["census_info"]["summary_cell_counts"])
        problems, obs_by_name = [], {}
        for name in sorted(set(root["census_data"].keys()) | set(included_cells)):
            if name not in root["census_data"]:
                problems.append(f"experiment {name}: missing")
                continue
            obs, found = _experiment_problems(root["census_data"][name], name, included_cells.get(name, 0))
            obs_by_name[name] = obs
            problems += found
    return problems + _info_problems(info, counts, obs_by_name)


def _table(frame) -> pd.DataFrame:
    return frame.read().concat().to_pandas()


def _experiment_problems(experiment, name: str, expected: int) -> tuple[pd.DataFrame, list[str]]:
    obs_frame = experiment.obs
    missing = [c for c in OBS_COLUMNS if c not in obs_frame.schema.names]
    obs = obs_frame.read(column_names=OBS_READ).concat().to_pandas()
    rna = experiment.ms["RNA"]
    var = rna.var.read(column_names=["feature_id", "nnz"]).concat().to_pandas()
    # each count once: an array's nnz is a query when its fragments overlap (1-2 s at 2 million cells)
    raw, normalized = rna.X["raw"].nnz, rna.X["normalized"].nnz
    presence = rna["feature_dataset_presence_matrix"].nnz
    measured = obs.drop_duplicates("dataset_id")["n_measured_vars"].sum()
    checks = {
        f"obs lacks the Census columns {missing}": bool(missing),
        f"{len(obs)} cells, where the inclusion rules chose {expected}": len(obs) != expected,
        "obs soma_joinid repeats": obs["soma_joinid"].duplicated().any(),
        "var feature_id repeats": var["feature_id"].duplicated().any(),
        f"X/raw holds {raw} values, obs nnz sums to {obs['nnz'].sum()}": raw != obs["nnz"].sum(),
        f"X/normalized holds {normalized} values, X/raw {raw}": normalized != raw,
        f"var nnz sums to {var['nnz'].sum()}, X/raw holds {raw}": var["nnz"].sum() != raw,
        f"the presence matrix marks {presence} genes, the datasets measure {measured}": presence != measured,
    }
    return obs, [f"experiment {name}: {problem}" for problem, wrong in checks.items() if wrong]


def _info_problems(info: dict[str, pd.DataFrame], counts: pd.DataFrame, obs_by_name: dict) -> list[str]:
    summary = dict(zip(info["summary"]["label"], info["summary"]["value"], strict=True))
    all_obs = pd.concat(obs_by_name.values()) if obs_by_name else pd.DataFrame(columns=OBS_READ)
    total, unique = len(all_obs), int(all_obs["is_primary_data"].sum())
    per_dataset = all_obs["dataset_id"].astype(str).value_counts()
    stated = info["datasets"].set_index("dataset_id")["dataset_total_cell_count"]
    wrong_datasets = [d for d, n in stated.items() if per_dataset.get(d, 0) != n]
    organisms = set(info["organisms"]["organism"])
    labels = dict(zip(info["organisms"]["organism"], info["organisms"]["organism_label"], strict=True))
    totals = counts[counts["category"] == "all"].set_index("organism")["total_cell_count"]
    checks = {
        f"census_info/summary states {summary.get('total_cell_count')} cells, the store holds {total}": (
            summary.get("total_cell_count") != str(total)
        ),
        f"census_info/summary states {summary.get('unique_cell_count')} unique cells, the store {unique}": (
            summary.get("unique_cell_count") != str(unique)
        ),
        f"census_info/datasets states other cell counts for {wrong_datasets[:3]}": bool(wrong_datasets),
        f"census_info/organisms lists {sorted(organisms)}, census_data holds {sorted(obs_by_name)}": (
            organisms != set(obs_by_name)
        ),
        "census_info/summary_cell_counts states other totals per organism": any(
            totals.get(labels.get(name)) != len(obs) for name, obs in obs_by_name.items()
        ),
    }
    return [problem for problem, wrong in checks.items() if wrong]
