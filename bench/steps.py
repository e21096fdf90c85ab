"""The baselines and single steps `bench/run.py` times, each in its own process.

python bench/steps.py NAME PROJECT
NAME: atlas-store-first, atlas-store-add (B13), seed-guide, census-slice,
      get-anndata, slice-large, h5py-floor, loader-lamin or loader-census
python bench/steps.py validation-catches PROJECT NAME (B14: over the built query NAME)
python bench/steps.py seed-guide PROJECT SCALE SPEC   (B1 at any scale: the spec's query, its manifest)
python bench/steps.py floor PROJECT SPEC              (B1f: the least reading and writing B1's result needs)
"""

from __future__ import annotations

import functools
import gc
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from cellquery.cellxgene.release import recorded, release_named, releases
from cellquery.files.atomic import write_json
from cellquery.instances.demo_instance import DemoInstance
from cellquery.instances.lamin import connect
from cellquery.spec.criteria import Criterion, obs_mask, value_filter

LOADER_BATCH_SIZE = 256
B13_DIR, B13_ADDED = Path(".bench") / "b13", 2  # the atlas stores B13 writes; datasets it adds
T_AND_B = ("CL:0000084", "CL:0000624", "CL:0000236", "CL:0000788")
CRITERIA = [
    Criterion("cell_type_ontology_term_id", "in", T_AND_B),
    Criterion("tissue_ontology_term_id", "in", ("UBERON:0000178",)),
]


def results(project: Path, name: str = "blood-immune") -> Path:
    return project / "results" / name


def manifest(project: Path, name: str = "blood-immune"):
    import pandas as pd

    return pd.read_csv(results(project, name) / "manifest.tsv", sep="\t")


def seed_guide(project: Path, scale: str = "bench", spec: str = "") -> None:
    """The seed guide's way: load each matching artifact whole, mask obs, slice, then anndata.concat.

    The artifacts are the pipeline's matches (its manifest), the mask its resolved criteria (query.json):
    the same cells. Writes baseline.h5ad and baseline.json (its cells) beside the pipeline's result.
    """
    import anndata as ad

    from cellquery.query.runfiles import criteria_of, read_query
    from cellquery.spec.query_spec import load_spec

    name = load_spec(Path(spec)).name if spec else "blood-immune"
    criteria = criteria_of(read_query(results(project, name) / "query.json"))
    ln = connect(DemoInstance(project, scale).env())
    pieces = []
    for uid in manifest(project, name)["uid"]:
        adata = ln.Artifact.get(uid=uid).load()
        pieces.append(adata[obs_mask(adata.obs, criteria)].copy())
        del adata
        gc.collect()  # free each file before the next: else the peak follows the cycle collector (2.2-3.2 GB)
    baseline = ad.concat(pieces, join="inner")
    baseline.write_h5ad(results(project, name) / "baseline.h5ad")
    write_json(results(project, name) / "baseline.json", {"n_obs": baseline.n_obs, "n_vars": baseline.n_vars})


def floor(project: Path, spec: str = "") -> None:
    """B1f, the floor under B1: the least work that yields the pipeline's result. Per matched h5ad the obs
    columns the criteria read, then the selected rows' counts (consecutive rows as one range); the census'
    selected cells' counts; each route's rows written once, to floor-h5ad.h5 and floor-census.h5 (CSR
    arrays as read). No gene alignment, checks, validation or registration."""
    import tiledbsoma as soma

    from cellquery.query.runfiles import criteria_of, read_query
    from cellquery.spec.query_spec import load_spec

    name = load_spec(Path(spec)).name if spec else "blood-immune"
    query = read_query(results(project, name) / "query.json")
    criteria, table = criteria_of(query), manifest(project, name)
    with Sink(results(project, name) / "floor-h5ad.h5") as sink:
        for path in table["path"]:
            read_selected_rows(path, criteria, sink)
    census, cells = query["census"], value_filter(criteria, list(table["dataset_id"]))
    with soma.open(census["path"]) as store, Sink(results(project, name) / "floor-census.h5") as sink:
        data = store["census_data"][recorded(census).experiment(query["organism"])]
        chosen = data.obs.read(column_names=["soma_joinid"], value_filter=cells).concat()
        joinids, matrix = np.sort(chosen["soma_joinid"].to_numpy()), data.ms["RNA"].X["raw"]
        for first in range(0, len(joinids), 2048):
            for block in matrix.read(coords=(joinids[first : first + 2048],)).tables():
                columns = ("soma_dim_0", "soma_dim_1", "soma_data")
                rows, indices, values = (block[c].to_numpy() for c in columns)
                sink.append(data=values, indices=indices, rows=rows)


def read_selected_rows(path: Path, criteria, sink) -> None:
    """The obs columns the criteria read, then the counts of the rows they select, into `sink`."""
    import anndata as ad
    import pandas as pd

    with h5py.File(path, "r") as f:
        columns = sorted({c.column for c in criteria})
        obs = pd.DataFrame({column: ad.io.read_elem(f["obs"][column]) for column in columns})
        rows = np.flatnonzero(obs_mask(obs, criteria))
        group = f["raw/X"] if "raw" in f else f["X"]
        indptr = group["indptr"][:]
        for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if len(rows) else []:
            start, stop = indptr[run[0]], indptr[run[-1] + 1]
            lengths = np.diff(indptr[run[0] : run[-1] + 2])
            sink.append(data=group["data"][start:stop], indices=group["indices"][start:stop], lengths=lengths)


class Sink:
    """Arrays appended to resizable h5py datasets, each value written once."""

    def __init__(self, path: Path):
        self.file, self.arrays = h5py.File(path, "w"), {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def append(self, **parts: np.ndarray) -> None:
        for name, values in parts.items():
            if name not in self.arrays:
                self.arrays[name] = self.file.create_dataset(
                    name, (0,), values.dtype, maxshape=(None,), chunks=(2**20,)
                )
            array = self.arrays[name]
            start = array.shape[0]
            array.resize((start + len(values),))
            array[start:] = values


B14_KINDS = ("a count changed", "counts moved between genes", "a cell missing", "a cell type renamed")
B14_TRIALS, B14_SAMPLE = 400, {"mode": "sampled", "fraction": 0.05}
B14_BAND = 32  # the rows of a band: the store's are 2,048 (a tile's); the query's 2,000-odd cells need more


def validation_catches(project: Path, name: str = "b14-kidney") -> None:
    """B14: the share of injected disagreements of each kind that a full and a sampled validation catch.

    The query (the shipped kidney-immune: every gene read, the datasets' shared ones kept) built once; then
    per trial one disagreement injected into a copy of its census route at a random cell, on genes the
    result holds, and both validations run on the real result and slices: the sampled one sees the census'
    totals of every cell (counted from the changed counts, as the Census states them) and the counts of its
    share. Writes b14.json."""
    import anndata as ad

    from cellquery.query.assemble import slice_totals
    from cellquery.query.validate import compare_routes

    folder = results(project, name)
    receipt = json.loads((folder / "shards" / "0.json").read_text())
    totals = slice_totals([Path(p) for p in receipt["slices"]])
    census, result = ad.read_h5ad(folder / "census.h5ad"), folder / f"{name}.h5ad"
    obs = ad.read_h5ad(result, backed="r").obs
    table, organism = manifest(project, name), "NCBITaxon:9606"
    genes = np.ones(census.n_vars, dtype=bool)  # the census holds only the genes the Census keeps
    held = census.var_names.isin(ad.read_h5ad(result, backed="r").var_names)
    rng, caught = np.random.default_rng(0), {kind: {"full": 0, "sampled": 0} for kind in B14_KINDS}
    for kind in B14_KINDS:
        for _ in range(B14_TRIALS):
            changed = injected(census, kind, held, rng)
            for mode, validation in (("full", {"mode": "full"}), ("sampled", B14_SAMPLE)):
                view = changed if mode == "full" else sampled_view(changed, genes, validation)
                path = folder / "b14-census.h5ad"
                view.write_h5ad(path)
                every, counted = np.ones(len(obs), dtype=bool), totals if mode == "sampled" else None
                report = compare_routes(result, path, organism, table, every, None, (), validation, counted)
                caught[kind][mode] += report["status"] == "failed"
    from cellquery.query.sampling import compared_rows

    share = float(compared_rows(np.arange(census.n_obs), B14_BAND, B14_SAMPLE).mean())
    found = {"trials": B14_TRIALS, "sample": B14_SAMPLE, "band": B14_BAND, "compared_share": share}
    write_json(folder / "b14.json", found | {"caught": caught})


def injected(census, kind: str, held: np.ndarray, rng):
    """The census route with one disagreement of `kind` at a random cell, on genes the result holds
    (`held`, per census gene): a cell with two such counts, the first 2 or more, so that a count can move
    between them keeping the cell's total and nnz."""
    import pandas as pd
    import scipy.sparse as sp

    changed = census.copy()
    counts = sp.csr_matrix(changed.X, copy=True)
    while True:
        row = int(rng.integers(changed.n_obs))
        stored = np.arange(counts.indptr[row], counts.indptr[row + 1])
        stored = stored[held[counts.indices[stored]]]
        if len(stored) >= 2 and counts.data[stored[0]] >= 2:
            break
    if kind == "a cell missing":
        return changed[np.arange(changed.n_obs) != row].copy()
    if kind == "a cell type renamed":
        types = changed.obs["cell_type"].astype(str).to_numpy()
        types[row] += " (renamed)"
        changed.obs["cell_type"] = pd.Categorical(types)
        return changed
    counts.data[stored[0]] += 1
    if kind == "counts moved between genes":
        counts.data[stored[0]] -= 2
        counts.data[stored[1]] += 1
    changed.X = counts
    return changed


def sampled_view(census, genes: np.ndarray, validation: dict):
    """The census route as a sampled validation reads it: every cell's raw_sum and nnz, the counts of the
    cells of the bands drawn (`B14_BAND` rows each, here of the route's own rows), and which those are."""
    import scipy.sparse as sp

    from cellquery.cellxgene.inclusion import CellTotals
    from cellquery.query.census_route import READ_KEY
    from cellquery.query.sampling import compared_rows

    view = census.copy()
    counts = sp.csr_matrix(view.X)
    totals = CellTotals(genes)
    list(totals.counted([counts]))
    view.obs = view.obs.assign(**totals.as_dict())
    compared = compared_rows(np.arange(view.n_obs), B14_BAND, validation)
    view.X = sp.csr_matrix(sp.diags(compared.astype(np.float32)) @ counts)
    view.uns[READ_KEY] = {"bytes": 0, "value_compared": compared}
    return view


def census_slice(project: Path) -> None:
    from cellquery.query.census_route import census_slice as ours

    query = json.loads((results(project) / "query.json").read_text())
    ours(
        query["census"],
        CRITERIA,
        organism="NCBITaxon:9606",
        dataset_ids=list(manifest(project)["dataset_id"]),
        obs_columns=query["obs_columns"],
        gene_ids=None,
        out=results(project) / "bench-census.h5ad",
    )


def get_anndata(project: Path) -> None:
    import cellxgene_census

    query = json.loads((results(project) / "query.json").read_text())
    with cellxgene_census.open_soma(uri=query["census"]["path"]) as census:
        adata = cellxgene_census.get_anndata(
            census,
            organism="Homo sapiens",
            obs_value_filter=value_filter(CRITERIA, list(manifest(project)["dataset_id"])),
            obs_column_names=["dataset_id", "observation_joinid", *query["obs_columns"]],
            X_name="raw",
        )
    adata.write_h5ad(results(project) / "bench-get-anndata.h5ad")


def largest(project: Path) -> Path:
    """The largest h5ad of the latest collection (whose release `slice_large` slices by)."""
    ln = connect(DemoInstance(project, "bench").env())
    collection = ln.Collection.filter(key="cellxgene-census", is_latest=True).first()
    return Path(collection.artifacts.filter(suffix=".h5ad").order_by("-size").first().cache())


def slice_large(project: Path) -> None:
    from cellquery.query.slicing import slice_dataset

    counts = slice_dataset(
        largest(project),
        CRITERIA,
        dataset_id="largest",
        organism="NCBITaxon:9606",
        release=releases()[-1],
        obs_columns=["cell_type"],
        gene_ids=None,
        out=results(project) / "bench-slice.h5ad",
    )
    if not counts["cells"]:  # a file the release's builder would not read: nothing measured
        raise RuntimeError("B3: the slice selected no cells")


def h5py_floor(project: Path) -> None:
    """The floor: read the obs codes, then only the selected rows' CSR data, nothing else."""
    from cellquery.files.h5ad import read_frame

    path = largest(project)
    rows = np.flatnonzero(obs_mask(read_frame(path, "obs"), CRITERIA))
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)  # consecutive rows read as one range
    with h5py.File(path, "r") as f:
        group = f["raw/X"]
        indptr = group["indptr"][:]
        data, indices = group["data"], group["indices"]
        chunks = [
            (data[indptr[r[0]] : indptr[r[-1] + 1]], indices[indptr[r[0]] : indptr[r[-1] + 1]]) for r in runs
        ]
    print(sum(len(c[0]) for c in chunks), "values read", file=sys.stderr)


def loader(route: str, project: Path) -> None:
    """One epoch of one route's loader over the registered result; figures to bench-loader-<route>.json."""
    from cellquery.query.training import Result, batches, connect_result, throughput

    result = Result(results(project))
    ln = connect_result(result, {}) if route == "lamin" else None
    figures = throughput(lambda: batches(route, result, "cell_type", LOADER_BATCH_SIZE, ln=ln))
    figures["batch_size"] = LOADER_BATCH_SIZE
    write_json(results(project) / f"bench-loader-{route}.json", figures)


def atlas_sources(project: Path) -> list:
    """The atlas demo's newer release as an atlas's datasets (B13), in the catalog's order."""
    from cellquery.demo import catalog
    from cellquery.store.sources import SourceDataset

    paths = {p.stem: p for p in (project / ".demo" / "atlas" / "h5ad").glob("shard-*/*.h5ad")}
    return [
        SourceDataset(spec.dataset_id, spec.dataset_version_id, spec.file_stem, paths[spec.file_stem])
        for spec in catalog.release("atlas", catalog.V2)
    ]


def atlas_store(step: str, project: Path) -> None:
    """B13: `first`, the store of all but the last `B13_ADDED` datasets, built; `add`, the store of all from
    the first one's (`cellquery.store.increment`)."""
    import shutil

    from cellquery.demo import catalog
    from cellquery.store.build import build_census
    from cellquery.store.increment import extend_census

    release = release_named(catalog.V2)
    sources, work = atlas_sources(project), project / B13_DIR
    if step == "first":
        shutil.rmtree(work, ignore_errors=True)
        build_census(sources[:-B13_ADDED], work / "v1", "v1", release)
    else:
        shutil.rmtree(work / "v2", ignore_errors=True)
        extend_census(work / "v1", sources, work / "v2", "v2", release)


STEPS = {
    "atlas-store-first": functools.partial(atlas_store, "first"),
    "atlas-store-add": functools.partial(atlas_store, "add"),
    "seed-guide": seed_guide,
    "floor": floor,
    "validation-catches": validation_catches,
    "census-slice": census_slice,
    "get-anndata": get_anndata,
    "slice-large": slice_large,
    "h5py-floor": h5py_floor,
    "loader-lamin": functools.partial(loader, "lamin"),
    "loader-census": functools.partial(loader, "census"),
}

if __name__ == "__main__":
    STEPS[sys.argv[1]](Path(sys.argv[2]), *sys.argv[3:])
