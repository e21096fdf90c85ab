"""The census route: the equivalent slice from a Census SOMA store, streamed to an h5ad in row blocks."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from cellquery.cellxgene.joinkey import check_unique, dataset_labels, require_join_key
from cellquery.cellxgene.release import CensusRelease, recorded, release_of
from cellquery.errors import SourceError
from cellquery.files import h5ad
from cellquery.files.atomic import atomic_path
from cellquery.query.runfiles import criteria_of, read_manifest, read_query
from cellquery.query.sampling import compared_rows, sampled
from cellquery.query.slicing import result_columns
from cellquery.spec.criteria import Criterion, value_filter
from cellquery.spec.genes import with_feature_types
from cellquery.spec.query_spec import MULTI_VALUED_COLUMNS
from cellquery.storage.settings import Access, access, is_remote, refusal, refused_hint, region_of
from cellquery.workflow.faults import failpoint
from cellquery.workflow.jobs import at_work

log = logging.getLogger(__name__)
T = TypeVar("T")

X_NAME = "raw"
READ_KEY = "census_read"  # the census slice's uns entry: what it read from the store (`bytes_read`)
# cells per read from X, at least (a read ends where a row of X's tiles does); TileDB holds several times a
# block while reading
ROW_BLOCK = 2048
# soma_joinids a block's row lookup may span (32 MiB); a block of cells scattered wider is searched instead,
# so memory stays flat however far apart the selected cells lie in the store
LOOKUP_SPAN = 2**22
# TileDB's memory for a read and tiledbsoma's per batch (their defaults, 10 GB and 1 GiB, let a filter over
# the Census' 100 million obs rows take 2 GB, and the plan's read of 62 million cells 2.1 GB; with these,
# 0.34 and 0.66 GB, and faster: B12); a config's `object_storage.tiledb` entries win
READ_BUDGET = {"sm.mem.total_budget": str(256 * 2**20), "soma.init_buffer_bytes": str(64 * 2**20)}


def experiment(census, store: dict, organism: str):
    """The organism's experiment in an opened store, named as the store's release names it."""
    return census["census_data"][recorded(store).experiment(organism)]


def store_release(store: dict, settings: dict | None = None) -> tuple[CensusRelease, list[str]]:
    """The release a census store is, by the schema versions of its `census_info/summary` (one line if
    cellquery does not serve it), and the experiments it holds."""
    with open_store(store, settings) as census:
        summary = census["census_info"]["summary"].read().concat().to_pandas()
        held = sorted(census["census_data"].keys())
    stated = dict(zip(summary["label"], summary["value"], strict=True))
    release = release_of(stated["census_schema_version"], stated["dataset_schema_version"], where(store))
    return release, held


def where(store: dict) -> str:
    return f"census store {store.get('key') or store['path']}"


@contextmanager
def open_store(store: dict, settings: dict | None = None) -> Iterator:
    """A census store (`query.json`'s `census`: its path, storage root and region), opened for reading: local,
    or in object storage with the endpoint, region and credentials of its root (`cellquery.storage.settings`).
    A store in object storage that cannot be read (the server unreachable, access refused) raises a
    `SourceError` naming it."""
    import tiledbsoma as soma

    soma.tiledbsoma_stats_enable()  # `bytes_read`: the bytes read from the store
    remote = store.get("root") and is_remote(store["root"])
    reach = access(store["root"], settings, region_of(store)) if remote else None
    own = (
        reach.tiledb_config() if reach else {k: str(v) for k, v in (settings or {}).get("tiledb", {}).items()}
    )
    context = soma.SOMATileDBContext(tiledb_config=READ_BUDGET | own)
    if reach is None and not Path(store["path"]).exists():
        raise SourceError(f"census store {store['path']} is missing (the instance's storage lost it)")
    try:
        with soma.open(store["path"], mode="r", soma_type=soma.Collection, context=context) as census:
            yield census
    except soma.SOMAError as error:
        if reach is None:
            raise SourceError(f"census store {store['path']} cannot be read: {_first_line(error)}") from None
        raise SourceError(unreadable(store["path"], reach, error)) from None


def unreadable(path: str, reach: Access, error: Exception) -> str:
    """One line: the store, where it was asked for, and why it cannot be read (what to check if refused)."""
    endpoint = reach.tiledb_config().get("vfs.s3.endpoint_override")  # the config's own, if it sets one
    where = endpoint or f"AWS {reach.region}"
    if refused := refusal(error):
        return f"census store {path} at {where} refused access ({refused}); {refused_hint(reach.anon)}"
    return f"census store {path} at {where} cannot be read: {_first_line(error)}"


def _first_line(error: Exception) -> str:
    """A SOMA or TileDB error's reason, without its preamble."""
    return str(error).strip().splitlines()[0].rpartition("Details: ")[2]


def stored_values(obs, criteria: list[Criterion]) -> dict[str, list[str]]:
    """The values the store holds in each multi-valued column the criteria name (`criteria.value_filter`)."""
    named = sorted({c.column for c in criteria} & MULTI_VALUED_COLUMNS)
    return {column: _distinct_values(obs, column) for column in named}


def _distinct_values(obs, column: str) -> list[str]:
    """A column's enumeration when it has one (the Census's obs columns do), else its distinct values."""
    if pa.types.is_dictionary(obs.schema.field(column).type):
        return [str(v) for v in obs.get_enumeration_values([column])[column].to_pylist()]
    table = obs.read(column_names=[column]).concat()
    return sorted({str(v) for v in table[column].to_pylist()})


def obs_filter(obs, criteria: list[Criterion], dataset_ids: list[str] | None) -> str:
    """The `value_filter` of the criteria within the datasets, on this census obs."""
    return value_filter(criteria, dataset_ids, stored_values(obs, criteria))


def query_filter(query: dict) -> str:
    """A resolved query's obs `value_filter` over every dataset (as the report shows it): its census store
    is read only when a criterion is on a multi-valued column."""
    criteria = criteria_of(query)
    if not {c.column for c in criteria} & MULTI_VALUED_COLUMNS:
        return value_filter(criteria)
    with open_store(query["census"], query["storage"]["object_storage"]) as census:
        return obs_filter(experiment(census, query["census"], query["organism"]).obs, criteria, None)


def cells_per_dataset(
    store: dict,
    criteria: list[Criterion],
    organism: str,
    dataset_ids: list[str],
    settings: dict | None = None,
    sample: dict | None = None,
) -> dict[str, int]:
    """How many census cells of each dataset match the criteria (and the `sample` keeps): reads the
    dataset ids (with a sample, the cells' keys and its `per` columns), no counts. A store without the join
    key is refused here, before any job reads it."""
    columns = ["dataset_id", *(["observation_joinid", *sample.get("per", [])] if sample else [])]
    with open_store(store, settings) as census:
        obs = experiment(census, store, organism).obs
        require_join_key(obs.schema.names, f"census store {store['key']}")
        table = obs.read(
            column_names=[*dict.fromkeys(columns)], value_filter=obs_filter(obs, criteria, dataset_ids)
        ).concat()
    obs = table.to_pandas()
    counts = obs["dataset_id"].astype(str)[sampled(obs, sample)].value_counts()
    return {dataset_id: int(counts.get(dataset_id, 0)) for dataset_id in dataset_ids}


def selected_values(
    store: dict,
    criteria: list[Criterion],
    organism: str,
    dataset_ids: list[str],
    settings: dict | None = None,
) -> int | None:
    """The stored values of X the census route reads at most for the selected cells: the sum of their `nnz`
    (the Census' per-cell count of nonzero values; None for a store without it)."""
    with open_store(store, settings) as census:
        obs = experiment(census, store, organism).obs
        if "nnz" not in obs.schema.names:
            return None
        table = obs.read(column_names=["nnz"], value_filter=obs_filter(obs, criteria, dataset_ids)).concat()
    return int(table["nnz"].to_numpy().sum())


def selected_positions(
    store: dict,
    criteria: list[Criterion],
    organism: str,
    dataset_ids: list[str],
    settings: dict | None = None,
) -> dict[str, np.ndarray]:
    """Where each dataset's selected cells lie in its file, as fractions of its census cells: the Census
    keeps a dataset's cells in the order of its h5ad, in one block of soma_joinids. Reads the selected cells'
    soma_joinids, and each dataset's first soma_joinid and cell count batch by batch (memory stays flat
    however many cells the datasets hold), no counts."""
    with open_store(store, settings) as census:
        obs = experiment(census, store, organism).obs
        columns = ["soma_joinid", "dataset_id"]
        chosen = obs.read(column_names=columns, value_filter=obs_filter(obs, criteria, dataset_ids)).concat()
        first, count = _dataset_extents(obs, dataset_ids)
    number = _dataset_numbers(chosen["dataset_id"], dataset_ids)
    offsets = chosen["soma_joinid"].to_numpy() - first[number]
    fractions = offsets / np.maximum(count[number], 1)
    return {dataset_id: np.sort(fractions[number == i]) for i, dataset_id in enumerate(dataset_ids)}


def _dataset_extents(obs, dataset_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per dataset, its smallest soma_joinid and its number of cells, read one batch at a time."""
    first = np.full(len(dataset_ids), np.iinfo(np.int64).max)
    count = np.zeros(len(dataset_ids), dtype=np.int64)
    every = obs.read(column_names=["soma_joinid", "dataset_id"], value_filter=value_filter([], dataset_ids))
    for batch in every:  # a dataframe read yields Arrow tables
        number = _dataset_numbers(batch["dataset_id"], dataset_ids)
        np.minimum.at(first, number, batch["soma_joinid"].to_numpy())
        count += np.bincount(number, minlength=len(dataset_ids))
    return first, count


def _dataset_numbers(column: pa.ChunkedArray, dataset_ids: list[str]) -> np.ndarray:
    """Each row's dataset as its position in `dataset_ids` (-1 for another): a dictionary column's values
    looked up once, not per row (an enumeration holds every dataset of the store)."""
    wanted = pd.Index(dataset_ids)
    numbers = [np.zeros(0, dtype=np.int64)]
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            held = wanted.get_indexer(chunk.dictionary.to_pandas().astype(str))
            numbers.append(held[chunk.indices.to_numpy(zero_copy_only=False)])
        else:
            numbers.append(wanted.get_indexer(chunk.to_pandas().astype(str)))
    return np.concatenate(numbers).astype(np.int64)


def gene_counts(
    store: dict, organism: str, dataset_ids: list[str], settings: dict | None = None
) -> pd.Series:
    """Per gene (feature id) of the store, how many of the datasets measure it; reads the presence matrix."""
    with open_store(store, settings) as census:
        rna = experiment(census, store, organism).ms["RNA"]
        feature_ids = rna.var.read(column_names=["soma_joinid", "feature_id"]).concat().to_pandas()
        counts = np.zeros(int(feature_ids["soma_joinid"].max()) + 1 if len(feature_ids) else 0, dtype=int)
        joinids = _dataset_joinids(census, dataset_ids)
        if len(joinids):  # batch by batch: 1,000 datasets' rows are some 30 million values
            for presence in rna["feature_dataset_presence_matrix"].read(coords=(joinids,)).tables():
                columns = presence["soma_dim_1"].to_numpy()[presence["soma_data"].to_numpy()]
                counts += np.bincount(columns, minlength=len(counts))
    return pd.Series(counts[feature_ids["soma_joinid"]], index=feature_ids["feature_id"].to_numpy())


def _dataset_joinids(census, dataset_ids: list[str]) -> np.ndarray:
    """The rows of `census_info/datasets` (and of the presence matrix) of the given datasets."""
    if not dataset_ids:
        return np.array([], dtype=np.int64)
    quoted = ", ".join(repr(str(d)) for d in dataset_ids)
    table = census["census_info"]["datasets"].read(
        column_names=["soma_joinid"], value_filter=f"dataset_id in [{quoted}]"
    )
    return np.sort(table.concat()["soma_joinid"].to_numpy())


def census_slice(
    store: dict,
    criteria: list[Criterion],
    *,
    organism: str,
    dataset_ids: list[str],
    obs_columns: list[str],
    gene_ids: list[str] | None,
    out: Path,
    settings: dict | None = None,
    layers: list[str] = (),
    sample: dict | None = None,
    uns: dict | None = None,
    labels: dict[str, str] | None = None,
    validation: dict | None = None,
) -> dict:
    """Write the census cells matching the criteria within the manifest's datasets (those the `sample`
    keeps) with X/raw and the `layers` asked for; returns counts. A sampled `validation` reads the counts
    of its share of the cells only (the others' rows stay empty; `uns[READ_KEY]["value_compared"]` marks
    them) and keeps every cell's `raw_sum` and `nnz` from obs (`cellquery.query.sampling.compared_rows`).

    The same query `cellxgene_census.get_anndata` runs, but obs, var and X are read separately and X is
    written block by block, so memory holds one block of counts rather than the whole slice. `obs_columns`
    the census lacks (the authors' own) are left out. A missing or repeated join key of the selected cells
    stops it, naming the dataset by its entry in `labels` (`cellquery.cellxgene.joinkey`).
    """
    import tiledbsoma as soma

    var_filter = f"feature_id in {sorted(gene_ids)!r}" if gene_ids is not None else None
    with open_store(store, settings) as census:
        data = experiment(census, store, organism)
        require_join_key(data.obs.schema.names, f"census store {store['key']}")
        cells_filter = obs_filter(data.obs, criteria, dataset_ids)
        log.info("obs value_filter: %s", cells_filter)
        columns = [c for c in result_columns(obs_columns) if c in data.obs.schema.names]
        columns += totals_columns(data.obs, store, validation)
        read = [*dict.fromkeys(["soma_joinid", *columns, *(sample or {}).get("per", [])])]
        with data.axis_query(
            "RNA",
            obs_query=soma.AxisQuery(value_filter=cells_filter),
            var_query=soma.AxisQuery(value_filter=var_filter),
        ) as query:
            obs = query.obs(column_names=read).concat().to_pandas()
            var = query.var().concat().to_pandas()
        check_unique(obs, labels or {}, "census")
        obs = obs[sampled(obs, sample)].sort_values("soma_joinid")
        var = var.sort_values("soma_joinid")
        matrices = {"X": data.ms["RNA"].X[X_NAME]} | {n: data.ms["RNA"].X[n] for n in layers}
        with atomic_path(out) as tmp:
            frames = _obs_frame(obs, [*dict.fromkeys(columns)]), _var_frame(var)
            band = _row_band(matrices["X"])
            wanted = compared_rows(obs["soma_joinid"].to_numpy(), band, validation)
            blocks = _row_blocks(matrices, obs, var, every_gene=var_filter is None, wanted=wanted, band=band)
            h5ad.write_streamed(tmp, *frames, blocks, uns=uns, layers=layers)
            read = bytes_read()
            compared = {} if wanted.all() else {"value_compared": wanted}  # a sampled validation's cells
            h5ad.write_uns_entry(tmp, READ_KEY, {"bytes": read, **compared})
            failpoint("census")
    log.info("census slice: %d cells x %d genes; %.1f MB read from the store", len(obs), len(var), read / 1e6)
    return {"cells": len(obs), "genes": len(var), "value_filter": cells_filter, "bytes_read": read}


def bytes_read() -> int:
    """What this process has read from census stores so far: TileDB's own count of the bytes its virtual
    file system read (local files or object storage alike), counted from `open_store` on."""
    import tiledbsoma as soma

    counters = json.loads(soma.tiledbsoma_stats_json() or "{}")
    counters = counters[0] if isinstance(counters, list) else counters
    return int(counters.get("counters", {}).get("Context.VFS.read_byte_num", 0))


def _row_band(matrix) -> int:
    """The soma_joinids a row of the matrix's tiles spans."""
    from cellquery.store.arrays import tile_extents

    return tile_extents(matrix)[0]


def totals_columns(obs, store: dict, validation: dict | None) -> list[str]:
    """The Census' per-cell totals a sampled validation compares for every cell; none for a full one."""
    if not validation or validation["mode"] == "full":
        return []
    if not {"raw_sum", "nnz"} <= set(obs.schema.names):
        raise SourceError(
            f"{where(store)}: obs has no raw_sum and nnz, which validation: sampled compares for every "
            "cell; use validation: full"
        )
    return ["raw_sum", "nnz"]


def _row_blocks(
    matrices: dict, obs: pd.DataFrame, var: pd.DataFrame, every_gene: bool, wanted: np.ndarray, band: int
):
    """Per block of the selected cells x genes, in soma_joinid order, the CSR block of each matrix with the
    rows of the `wanted` cells read, the others empty (`every_gene`: the var query selected all genes, so
    whole rows are read). The next block is read while the caller writes this one."""
    cells, genes = obs["soma_joinid"].to_numpy(), var["soma_joinid"].to_numpy()
    if len(cells) and not len(genes):
        yield {name: sp.csr_matrix((len(cells), 0), dtype=np.float32) for name in matrices}
        return
    column_of = _positions(genes)

    def read(start: int, stop: int) -> dict[str, sp.csr_matrix]:
        block = cells[start:stop]
        chosen = block[wanted[start:stop]]
        if not len(chosen):
            return {name: sp.csr_matrix((len(block), len(genes)), dtype=np.float32) for name in matrices}
        coords = (chosen,) if every_gene else (chosen, genes)
        return {name: _read_block(m, coords, block, column_of, len(genes)) for name, m in matrices.items()}

    yield from _read_ahead(partial(read, *span) for span in _block_spans(cells, band))


def _block_spans(cells: np.ndarray, band: int) -> list[tuple[int, int]]:
    """Blocks of at least `ROW_BLOCK` of the (sorted) cells, each beginning where a band of `band`
    soma_joinids (a row of X's tiles) begins: no two blocks read the same row of tiles."""
    band_starts = np.flatnonzero(np.diff(cells // band, prepend=-1))
    starts, next_cut = [], 0
    for start in band_starts.tolist():
        if start >= next_cut:
            starts.append(start)
            next_cut = start + ROW_BLOCK
    stops = [*starts[1:], len(cells)] if starts else []
    return list(zip(starts, stops, strict=True))


def _read_ahead(reads: Iterator[Callable[[], T]]) -> Iterator[T]:
    """The results of the `reads` in order, each next one running in a thread while the caller uses the
    last (TileDB reads without Python's lock)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for read in reads:
            running = pool.submit(read)
            if pending is not None:
                yield pending.result()
            pending = running
        if pending is not None:
            yield pending.result()


def _read_block(
    matrix, coords: tuple, cells: np.ndarray, column_of: np.ndarray, n_genes: int
) -> sp.csr_matrix:
    """The values at `coords` as a CSR block with a row for each of `cells` (sorted soma_joinids)."""
    table = matrix.read(coords=coords).tables().concat()
    rows = _rows_in_block(cells, table["soma_dim_0"].to_numpy())
    columns = column_of[table["soma_dim_1"].to_numpy()]
    values = table["soma_data"].to_numpy()
    return sp.csr_matrix((values, (rows, columns)), shape=(len(cells), n_genes), dtype=np.float32)


def _rows_in_block(cells: np.ndarray, joinids: np.ndarray) -> np.ndarray:
    """Each value's row among the block's `cells` (sorted, distinct soma_joinids): by a lookup table while
    the block spans at most `LOOKUP_SPAN` joinids (a binary search per value took a third of the slice's
    time), else by binary search (a table over a span of 100 million joinids would take 0.8 GB)."""
    if len(cells) and cells[-1] - cells[0] < LOOKUP_SPAN:
        return _positions(cells - cells[0])[joinids - cells[0]]
    return np.searchsorted(cells, joinids)


def _positions(joinids: np.ndarray) -> np.ndarray:
    """An array mapping each of these (non-negative, distinct) soma_joinids to its position among them: a
    lookup by index, where a binary search per value took a third of the slice's time."""
    lookup = np.empty(int(joinids.max()) + 1 if len(joinids) else 0, dtype=np.int64)
    lookup[joinids] = np.arange(len(joinids))
    return lookup


def _obs_frame(obs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Obs named `<dataset_id>:<observation_joinid>`, the key the h5ad route uses."""
    keys = obs["dataset_id"].astype(str) + ":" + obs["observation_joinid"].astype(str)
    return h5ad.without_unused_categories(obs[columns].set_index(pd.Index(keys.to_numpy())))


def _var_frame(var: pd.DataFrame) -> pd.DataFrame:
    """Var named by feature id; without `feature_type`, the gene references' (`cellquery.spec.genes`)."""
    var = var.drop(columns="soma_joinid").set_index("feature_id", drop=False).rename_axis(None)
    return with_feature_types(var).astype({"feature_type": "category"})


def census_route(query_path: Path, manifest_path: Path, out: Path, validation: dict | None = None) -> None:
    """Step census: the query's cells from the census store (backend c), into `out`; a sampled
    `validation` (the config's) reads its share of the cells' counts."""
    from cellquery.outputs.provenance import UNS_KEY, provenance

    at_work()
    query, manifest = read_query(query_path), read_manifest(manifest_path)
    census_slice(
        query["census"],
        criteria_of(query),
        organism=query["organism"],
        dataset_ids=list(manifest["dataset_id"]),
        obs_columns=query["obs_columns"],
        gene_ids=query["gene_ids"],
        out=out,
        settings=query["storage"]["object_storage"],
        layers=query["layers"],
        sample=query["sample"],
        uns={UNS_KEY: provenance(query, manifest, "census")},
        labels=dataset_labels(manifest),
        validation=validation,
    )
