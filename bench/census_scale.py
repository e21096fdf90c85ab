"""B12's store: a human experiment at the real Census' scale, store only (no registry, no h5ads).

The 2025-01-30 release's human experiment holds about 109 million cells in 1,573 datasets. This store has
`CELLS` obs rows with the real columns (Census schema 2.1.0: categories as enumerations, the join key a
10-character string) in `DATASETS` datasets whose sizes are drawn from a log-normal (median 20,000 cells,
sigma 1.57: a mean of about 69,000 cells a dataset and a largest of about 3 million, as the release's),
each dataset with its own assay, a few tissues, cell types, diseases, donors and stages drawn from the real
ontologies; a presence matrix of `DATASETS` x `GENES` (each dataset measuring 15,000-40,000 genes); and X
only for the cells of the probe: one cell type held by `PROBE_CELLS` cells scattered over each of
`PROBE_DATASETS` datasets, `X_GENES` values a cell. Its obs and presence matrix are what the spec check,
the per-value counts, the plan and the gene coverage read; X is what the census slice of the probe reads.

python -m bench.census_scale build ROOT [--cells N]        (ROOT/soma, ROOT/built.json)
python -m bench.census_scale STEP SIDE ROOT                 (STEP in STEPS, SIDE ours or official: what
                                                            it found in ROOT/STEP-SIDE.json)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cellquery.cellxgene import ontology
from cellquery.cellxgene.release import release_named
from cellquery.spec.criteria import Criterion, value_filter

CELLS, DATASETS, GENES = 100_000_000, 1_600, 60_000
PROBE_DATASETS, PROBE_CELLS, X_GENES = 1_000, 50, 1_500
MEDIAN_CELLS, SIGMA = 20_000, 1.57
MAX_DONORS = 40  # donors a dataset holds at most
ROWS_PER_WRITE = 4_000_000
VERSION = "2025-01-30"
HUMAN = "NCBITaxon:9606"
PROBE = "CL:0000786"  # plasma cell: only the probe's cells are of it
COUNTED = ("CL:0000786", "CL:0000084", "CL:0000236")  # plasma cell, T cell, B cell: the per-value counts
VOCABULARY = {
    "cell_type": 700,
    "tissue": 250,
    "disease": 120,
    "development_stage": 200,
    "self_reported_ethnicity": 30,
}
PREFIXES = {
    "cell_type": "CL",
    "tissue": "UBERON",
    "disease": "MONDO",
    "development_stage": "HsapDv",
    "self_reported_ethnicity": "HANCESTRO",
}
PER_DATASET = {  # how many terms of each a dataset holds: (fewest, most)
    "cell_type": (5, 40),
    "tissue": (1, 3),
    "disease": (1, 2),
    "development_stage": (1, 4),
    "self_reported_ethnicity": (1, 3),
}


def store_of(root: Path) -> dict:
    """The store as a resolved query names it."""
    return {"key": f"cell-census/{VERSION}/soma", "path": str(root / "soma"), "release": release().identity}


def release():
    return release_named(VERSION)


def terms(column: str) -> list[str]:
    """The column's vocabulary: real, non-deprecated terms of its ontology (the probe's not among them)."""
    held = ontology.ontology(PREFIXES[column])
    prefix = f"{PREFIXES[column]}:"
    found = sorted(t for t, a in held.items() if t.startswith(prefix) and not a["deprecated"] and t != PROBE)
    picked = np.random.default_rng(len(column)).choice(len(found), VOCABULARY[column], replace=False)
    return [found[i] for i in sorted(picked)]


def dataset_sizes(cells: int, rng) -> np.ndarray:
    sizes = np.maximum(rng.lognormal(np.log(MEDIAN_CELLS), SIGMA, DATASETS), 200)
    sizes = np.floor(sizes / sizes.sum() * cells).astype(np.int64)
    sizes[np.argmax(sizes)] += cells - sizes.sum()
    return sizes


class Vocabularies:
    """Every categorical column's values (term ids and their labels share codes)."""

    def __init__(self, dataset_ids: list[str]):
        self.values = {column: terms(column) for column in PREFIXES}
        self.values["cell_type"].append(PROBE)
        self.values["assay"] = sorted(release().rna_assays)
        self.values["sex"] = ["PATO:0000383", "PATO:0000384", "unknown"]
        self.values["dataset_id"] = dataset_ids
        # every write gives each column its whole vocabulary: TileDB extending an enumeration from one
        # write's dictionary to another's left codes past its end (tiledbsoma 2.3, donor ids)
        self.values["donor_id"] = [f"D{n:04d}-{k}" for n in range(DATASETS) for k in range(MAX_DONORS)]
        self.values["suspension_type"] = ["cell", "nucleus"]
        self.values["tissue_type"] = ["tissue", "organoid"]
        self.general = [ontology.general_tissue(t) for t in self.values["tissue"]]

    def dictionary(self, column: str, codes: np.ndarray) -> pa.DictionaryArray:
        """A column of term ids, or of their labels, from the codes of its terms."""
        values = self.values[column.removesuffix("_ontology_term_id")]
        if not column.endswith("_ontology_term_id") and column in (*PREFIXES, "assay", "sex"):
            values = [ontology.label(v) if ":" in v else v for v in values]
        return encoded(codes, values)


def encoded(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    """Codes into `values` as a dictionary column of distinct values (two terms may share a label)."""
    distinct, position = np.unique(np.asarray(values, dtype=object), return_inverse=True)
    return pa.DictionaryArray.from_arrays(
        pa.array(position[codes], pa.int32()), pa.array(distinct.tolist(), pa.large_string())
    )


def join_keys(n: int, rng) -> pa.Array:
    """`n` 10-character observation_joinids, as the Census' (printable ASCII)."""
    alphabet = np.frombuffer(
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&*+-;<=>?@^_~", np.uint8
    )
    data = alphabet[rng.integers(0, len(alphabet), n * 10)]
    offsets = np.arange(0, n * 10 + 1, 10, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def dataset_codes(vocabularies: Vocabularies, number: int, size: int, rng) -> dict[str, np.ndarray]:
    """Per categorical column, the codes of one dataset's cells, drawn from its own few terms."""
    codes = {}
    for column, (fewest, most) in PER_DATASET.items():
        n_terms = len(vocabularies.values[column]) - (column == "cell_type")
        weights = 1 / np.arange(1, n_terms + 1)  # a few terms common, most rare (Zipf)
        held = rng.choice(n_terms, rng.integers(fewest, most + 1), replace=False, p=weights / weights.sum())
        codes[column] = held[rng.integers(0, len(held), size)]
    n_assays = len(vocabularies.values["assay"])
    codes["assay"] = np.full(size, rng.integers(0, min(n_assays, 12)))  # the common 10x assays first
    codes["sex"] = rng.integers(0, 3, size)
    codes["dataset_id"] = np.full(size, number)
    codes["suspension_type"] = np.full(size, rng.integers(0, 2))
    codes["tissue_type"] = np.full(size, int(rng.random() < 0.05))
    codes["donor_id"] = number * MAX_DONORS + rng.integers(0, rng.integers(1, MAX_DONORS + 1), size)
    return codes


def obs_table(vocabularies: Vocabularies, first: int, parts: list[tuple[int, dict]], rng) -> pa.Table:
    """The obs rows of some datasets' cells, from soma_joinid `first` on."""
    from cellquery.store.experiment import OBS_SCHEMA

    n = sum(len(codes["dataset_id"]) for _, codes in parts)
    code = {c: np.concatenate([codes[c] for _, codes in parts]) for c in parts[0][1]}
    primary = np.concatenate([np.full(len(c["dataset_id"]), number % 7 != 0) for number, c in parts])
    nnz = rng.integers(300, 6_000, n)
    raw_sum = nnz * rng.uniform(1.2, 3.0, n)
    columns = {"soma_joinid": pa.array(np.arange(first, first + n, dtype=np.int64))}
    for column in OBS_SCHEMA.names[1:]:
        if column in ("donor_id", "dataset_id"):
            columns[column] = encoded(code[column], vocabularies.values[column])
        elif column.startswith("tissue_general"):
            general = [t if column.endswith("_id") else ontology.label(t) for t in vocabularies.general]
            columns[column] = encoded(code["tissue"], general)
        elif column == "is_primary_data":
            columns[column] = pa.array(primary)
        elif column == "observation_joinid":
            columns[column] = join_keys(n, rng)
        elif column in ("nnz", "n_measured_vars"):
            columns[column] = pa.array(nnz if column == "nnz" else np.full(n, 25_000), pa.int64())
        elif column.startswith("raw_"):
            stat = {"raw_sum": raw_sum, "raw_mean_nnz": raw_sum / nnz}.get(column, raw_sum / nnz * 2)
            columns[column] = pa.array(stat, pa.float64())
        else:
            columns[column] = vocabularies.dictionary(column, code[column.removesuffix("_ontology_term_id")])
    return pa.table(columns, schema=OBS_SCHEMA)


def build(root: Path, cells: int) -> dict:
    """Write the store under `root/soma` (staged, then renamed); what it cost, in `root/built.json`."""
    import tiledbsoma as soma

    from cellquery.store.arrays import add_dataframe, add_sparse, arrow_table
    from cellquery.store.experiment import OBS_SCHEMA, PRESENCE

    started, rng = time.perf_counter(), np.random.default_rng(0)
    sizes = dataset_sizes(cells, rng)
    dataset_ids = [f"{number:08x}-b12c-4e1a-9a7d-{number:012x}" for number in range(DATASETS)]
    vocabularies = Vocabularies(dataset_ids)
    staging = root / "soma.staging"
    shutil.rmtree(staging, ignore_errors=True)
    soma.Collection.create(str(staging)).close()
    with soma.Collection.open(str(staging), "w") as census:
        info = census.add_new_collection("census_info")
        write_info(info, dataset_ids, sizes)
        human = census.add_new_collection("census_data").add_new_collection("homo_sapiens", soma.Experiment)
        add_dataframe(human, "obs", OBS_SCHEMA.empty_table(), cells)
        rna = human.add_new_collection("ms").add_new_collection("RNA", soma.Measurement)
        genes = genes_table()
        add_dataframe(rna, "var", arrow_table(genes, categorical=("feature_type",)))
        write_presence(add_sparse(rna, PRESENCE, pa.bool_(), (DATASETS, GENES)), rng)
        probe, probed = write_obs(f"{human.uri}/obs", vocabularies, sizes, rng)
        with add_sparse(rna.add_new_collection("X"), "raw", pa.float32(), (cells, GENES)) as raw:
            write_probe_x(raw, probe, rng)
    shutil.rmtree(root / "soma", ignore_errors=True)
    staging.rename(root / "soma")
    cost = {
        "cells": cells,
        "datasets": DATASETS,
        "genes": GENES,
        "probe_cells": len(probe),
        "probe_datasets": [dataset_ids[n] for n in probed],
        "seconds": round(time.perf_counter() - started, 1),
        "disk_gb": round(sum(f.stat().st_size for f in (root / "soma").rglob("*") if f.is_file()) / 1e9, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    (root / "built.json").write_text(json.dumps(cost, indent=2) + "\n")
    return cost


def write_info(info, dataset_ids: list[str], sizes: np.ndarray) -> None:
    from cellquery.store.arrays import add_dataframe, arrow_table

    datasets = pd.DataFrame(
        {
            "collection_id": "b12",
            "collection_name": "census scale",
            "collection_doi": "",
            "collection_doi_label": "",
            "dataset_id": dataset_ids,
            "dataset_version_id": dataset_ids,
            "dataset_title": [f"dataset {n}" for n in range(DATASETS)],
            "dataset_h5ad_path": [f"{d}.h5ad" for d in dataset_ids],
            "dataset_total_cell_count": sizes,
        }
    )
    add_dataframe(info, "datasets", arrow_table(datasets))
    stated = release()
    labels = ["census_schema_version", "census_build_date", "dataset_schema_version", "total_cell_count"]
    values = [stated.census_schema, VERSION, stated.dataset_schema, str(int(sizes.sum()))]
    add_dataframe(info, "summary", arrow_table(pd.DataFrame({"label": labels, "value": values})))


def genes_table() -> pd.DataFrame:
    from cellquery.spec.genes import gene_table

    genes = gene_table(HUMAN).iloc[:GENES]
    return pd.DataFrame(
        {
            "feature_id": genes.index.to_numpy(),
            "feature_name": genes["feature_name"].astype(str).to_numpy(),
            "feature_type": genes["feature_type"].astype(str).to_numpy(),
            "feature_length": genes["feature_length"].to_numpy(np.int64),
            "nnz": np.zeros(GENES, np.int64),
            "n_measured_obs": np.zeros(GENES, np.int64),
        }
    )


def write_presence(presence, rng) -> None:
    """Each dataset measures 15,000-40,000 of the genes."""
    from cellquery.store.arrays import coo_table

    for first in range(0, DATASETS, 100):
        rows, columns = [], []
        for dataset in range(first, min(first + 100, DATASETS)):
            measured = np.sort(rng.choice(GENES, rng.integers(15_000, 40_001), replace=False))
            rows.append(np.full(len(measured), dataset, np.int64))
            columns.append(measured.astype(np.int64))
        rows, columns = np.concatenate(rows), np.concatenate(columns)
        presence.write(coo_table(rows, columns, np.ones(len(rows), bool)))
    presence.close()


def write_obs(uri: str, vocabularies: Vocabularies, sizes: np.ndarray, rng) -> tuple[np.ndarray, list[int]]:
    """Obs, `ROWS_PER_WRITE` rows a fragment; returns the probe's soma_joinids and datasets."""
    import tiledbsoma as soma

    probed = sorted(rng.choice(DATASETS, PROBE_DATASETS, replace=False).tolist())
    probe, parts, first, pending = [], [], 0, 0
    with soma.DataFrame.open(uri, "w") as obs:
        for number, size in enumerate(sizes):
            codes = dataset_codes(vocabularies, number, int(size), rng)
            if number in probed:
                rows = np.sort(rng.choice(size, min(PROBE_CELLS, size), replace=False))
                codes["cell_type"][rows] = len(vocabularies.values["cell_type"]) - 1
                probe.append(first + pending + rows)
            parts.append((number, codes))
            pending += int(size)
            if pending >= ROWS_PER_WRITE or number == DATASETS - 1:
                obs.write(obs_table(vocabularies, first, parts, rng))
                first, pending, parts = first + pending, 0, []
                print(f"obs: {first:,} of {sizes.sum():,} rows", file=sys.stderr, flush=True)
    return np.concatenate(probe), probed


def write_probe_x(raw, probe: np.ndarray, rng) -> None:
    """X for the probe's cells: `X_GENES` whole counts a cell."""
    from cellquery.store.arrays import coo_table

    for first in range(0, len(probe), 2_000):
        cells = probe[first : first + 2_000]
        columns = np.concatenate([np.sort(rng.choice(GENES, X_GENES, replace=False)) for _ in cells])
        rows = np.repeat(cells, X_GENES)
        values = rng.geometric(0.4, len(rows)).astype(np.float32)
        raw.write(coo_table(rows, columns.astype(np.int64), values))


# What B12 measures: each step ours (cellquery's function) or official (cellxgene_census reading the same).


def probe_filter(dataset_ids=None) -> str:
    return value_filter(CRITERIA, dataset_ids)


CRITERIA = [Criterion("cell_type_ontology_term_id", "in", (PROBE,))]
COUNTED_CRITERIA = [Criterion("cell_type_ontology_term_id", "in", COUNTED)]


def official(root: Path):
    import cellxgene_census

    return cellxgene_census.open_soma(uri=str(root / "soma"))


def counts(side: str, root: Path, datasets: list[str]) -> int:
    """The spec check's and resolve's read: the probe's cells per dataset."""
    if side == "ours":
        from cellquery.query.census_route import cells_per_dataset

        return sum(cells_per_dataset(store_of(root), CRITERIA, HUMAN, datasets).values())
    with official(root) as census:
        obs = census_obs(census, probe_filter(datasets), ["dataset_id"])
    return len(obs)


def census_obs(census, value_filter: str, columns: list[str]) -> pd.DataFrame:
    import cellxgene_census

    return cellxgene_census.get_obs(census, "Homo sapiens", value_filter=value_filter, column_names=columns)


def values(side: str, root: Path, datasets: list[str]) -> int:
    """The per-value counts: cells and datasets of each of three cell types."""
    if side == "ours":
        from cellquery.query.value_counts import value_counts

        tables, _ = value_counts(store_of(root), COUNTED_CRITERIA, HUMAN, datasets, lambda column, term: ())
        return sum(v["cells"] for v in tables[0]["values"].values())
    with official(root) as census:
        chosen = value_filter(COUNTED_CRITERIA, datasets)
        obs = census_obs(census, chosen, ["dataset_id", "cell_type_ontology_term_id"])
    grouped = obs.groupby("cell_type_ontology_term_id", observed=True)["dataset_id"]
    found = pd.DataFrame({"cells": grouped.size(), "datasets": grouped.nunique()})
    return int(found["cells"].sum())


def positions(side: str, root: Path, datasets: list[str]) -> int:
    """The plan's read: where each dataset's selected cells lie among its cells."""
    if side == "ours":
        from cellquery.query.census_route import selected_positions

        return sum(len(p) for p in selected_positions(store_of(root), CRITERIA, HUMAN, datasets).values())
    with official(root) as census:
        every = census_obs(census, value_filter([], datasets), ["soma_joinid", "dataset_id"])
        chosen = census_obs(census, probe_filter(datasets), ["soma_joinid"])
    return int(every["soma_joinid"].isin(chosen["soma_joinid"]).sum())


def coverage(side: str, root: Path, datasets: list[str]) -> int:
    """The gene coverage: per gene, how many of the datasets measure it."""
    if side == "ours":
        from cellquery.query.census_route import gene_counts

        return int(gene_counts(store_of(root), HUMAN, datasets).sum())
    import cellxgene_census

    with official(root) as census:
        presence = cellxgene_census.get_presence_matrix(census, "Homo sapiens")
        table = census["census_info"]["datasets"].read(column_names=["soma_joinid", "dataset_id"]).concat()
    rows = table.to_pandas().set_index("dataset_id").loc[datasets, "soma_joinid"].to_numpy()
    return int(presence[rows].sum())


SLICE_COLUMNS = ["dataset_id", "observation_joinid", "cell_type", "tissue", "assay", "disease", "donor_id"]


def census_slice(side: str, root: Path, datasets: list[str]) -> int:
    """The census slice of the probe: its cells scattered over `PROBE_DATASETS` datasets, every gene."""
    if side == "ours":
        from cellquery.query import census_route

        out = root / "slice.h5ad"
        written = census_route.census_slice(
            store_of(root),
            CRITERIA,
            organism=HUMAN,
            dataset_ids=datasets,
            obs_columns=SLICE_COLUMNS,
            gene_ids=None,
            out=out,
        )
        out.unlink()
        return written["cells"]
    import cellxgene_census

    with official(root) as census:
        adata = cellxgene_census.get_anndata(
            census, "Homo sapiens", obs_value_filter=probe_filter(datasets), obs_column_names=SLICE_COLUMNS
        )
    return adata.n_obs


STEPS = {
    "counts": ("the spec check's and resolve's cells per dataset", counts),
    "values": ("the per-value counts of 3 cell types", values),
    "positions": ("the plan's cell positions", positions),
    "coverage": ("the gene coverage (presence matrix)", coverage),
    "slice": ("the census slice, every gene", census_slice),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.census_scale")
    parser.add_argument("step", choices=["build", *STEPS])
    parser.add_argument("side", nargs="?", choices=["ours", "official"])
    parser.add_argument("root", type=Path)
    parser.add_argument("--cells", type=int, default=CELLS)
    args = parser.parse_args()
    if args.step == "build":
        cost = build(args.root, args.cells)
        print(json.dumps({k: v for k, v in cost.items() if k != "probe_datasets"}))
        return
    datasets = json.loads((args.root / "built.json").read_text())["probe_datasets"]
    started = time.perf_counter()
    result = STEPS[args.step][1](args.side, args.root, datasets)
    found = {"result": result, "seconds": round(time.perf_counter() - started, 2)}
    (args.root / f"{args.step}-{args.side}.json").write_text(json.dumps(found) + "\n")


if __name__ == "__main__":
    main()
