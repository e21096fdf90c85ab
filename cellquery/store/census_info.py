"""The `census_info` collection (the builder's `census_summary.py` and `summary_cell_counts.py`): the summary,
the datasets, the cell counts per label and the organisms."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellquery.cellxgene import ontology
from cellquery.cellxgene.release import CensusRelease
from cellquery.store.arrays import add_dataframe, arrow_table
from cellquery.store.sources import SourceDataset

SUMMARY_CATEGORIES = (
    "assay",
    "cell_type",
    "disease",
    "self_reported_ethnicity",
    "sex",
    "suspension_type",
    "tissue",
    "tissue_general",
)


def write_census_info(
    root,
    sources: list[SourceDataset],
    obs_by_organism: dict[str, pd.DataFrame],
    organism_labels: dict[str, str],
    census_version: str,
    release: CensusRelease,
    dataset_joinids: list[int] | None = None,
) -> None:
    """`census_info` under `root`, from the experiments' obs as written; the datasets' soma_joinids (their
    rows of the presence matrix) 0..n-1 in `sources` order unless given."""
    info = root.add_new_collection("census_info")
    add_dataframe(info, "summary", arrow_table(summary(obs_by_organism, census_version, release)))
    joinids = np.arange(len(sources)) if dataset_joinids is None else np.asarray(dataset_joinids)
    table = arrow_table(datasets(sources, obs_by_organism), joinids=joinids)
    add_dataframe(info, "datasets", table, n_rows=int(joinids.max(initial=-1)) + 1)
    add_dataframe(info, "summary_cell_counts", arrow_table(summary_cell_counts(obs_by_organism)))
    add_dataframe(info, "organisms", arrow_table(organisms(organism_labels)))
    info.close()


def summary(
    obs_by_organism: dict[str, pd.DataFrame], census_version: str, release: CensusRelease
) -> pd.DataFrame:
    total, unique = cell_totals(obs_by_organism)
    labels = [
        "census_schema_version",
        "census_build_date",
        "dataset_schema_version",
        "total_cell_count",
        "unique_cell_count",
    ]
    values = [release.census_schema, census_version, release.dataset_schema, total, unique]
    return pd.DataFrame({"label": labels, "value": values}).astype(str)


def cell_totals(obs_by_organism: dict[str, pd.DataFrame]) -> tuple[int, int]:
    """All cells of the store, and its primary (unique) ones."""
    total = sum(len(obs) for obs in obs_by_organism.values())
    unique = sum(int(obs["is_primary_data"].sum()) for obs in obs_by_organism.values())
    return total, unique


def datasets(sources: list[SourceDataset], obs_by_organism: dict[str, pd.DataFrame]) -> pd.DataFrame:
    all_obs = pd.concat(obs_by_organism.values())
    cell_counts = all_obs["dataset_id"].astype(str).value_counts()
    return pd.DataFrame(
        {
            "citation": [s.citation for s in sources],
            "collection_id": [s.collection_id for s in sources],
            "collection_name": [s.collection_name for s in sources],
            "collection_doi": "",
            "collection_doi_label": "",
            "dataset_id": [s.dataset_id for s in sources],
            "dataset_version_id": [s.dataset_version_id for s in sources],
            "dataset_title": [s.title for s in sources],
            "dataset_h5ad_path": [f"{s.dataset_id}.h5ad" for s in sources],
            "dataset_total_cell_count": [int(cell_counts.get(s.dataset_id, 0)) for s in sources],
        }
    )


def summary_cell_counts(obs_by_organism: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for organism, obs in obs_by_organism.items():
        rows.append(_count_row(organism, "all", "na", "na", obs["is_primary_data"]))
        for category in SUMMARY_CATEGORIES:
            id_column = f"{category}_ontology_term_id" if category != "suspension_type" else category
            grouped = obs.groupby([category, id_column], observed=True)["is_primary_data"]
            for (label, term_id), primary in grouped:
                term = term_id if category != "suspension_type" else "na"
                rows.append(_count_row(organism, category, label, term, primary))
    return pd.DataFrame(rows)


def _count_row(organism: str, category: str, label: str, term_id: str, primary: pd.Series) -> dict:
    return {
        "organism": organism,
        "category": category,
        "label": label,
        "ontology_term_id": term_id,
        "total_cell_count": len(primary),
        "unique_cell_count": int(primary.sum()),
    }


def organisms(organism_labels: dict[str, str]) -> pd.DataFrame:
    organism_ids = {scientific: term for term, (_, scientific) in ontology.ORGANISMS.items()}
    return pd.DataFrame(
        {
            "organism_ontology_term_id": [organism_ids[label] for label in organism_labels.values()],
            "organism_label": list(organism_labels.values()),
            "organism": list(organism_labels.keys()),
        }
    )
