"""Out-of-core access to h5ad files: frames without the matrix, matrix rows in blocks.

Every reader takes a path or an open binary file (a streamed file in object storage,
`cellquery.storage.streaming`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from functools import reduce
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROW_BLOCK = 4096
ROW_GAP = 256  # skipped rows that end a read window
CHUNK = 2**16  # values per HDF5 chunk of a streamed matrix


def read_frame(path: str | Path, key: str) -> pd.DataFrame:
    """Read one dataframe element (`obs`, `var`, `raw/var`) without touching the matrices."""
    with h5py.File(path, "r") as f:
        return ad.io.read_elem(f[key])


def write_uns_entry(path: str | Path, key: str, value) -> None:
    """Add `uns[key]` to an h5ad written already."""
    with h5py.File(path, "a") as f:
        ad.io.write_elem(f.require_group("uns"), key, value)


def read_uns(path: str | Path) -> dict:
    with h5py.File(path, "r") as f:
        return ad.io.read_elem(f["uns"]) if "uns" in f else {}


def counts_keys(path: str | Path) -> tuple[str, str]:
    """Where raw counts live: (`raw/X`, `raw/var`) when the file has raw, else (`X`, `var`)."""
    with h5py.File(path, "r") as f:
        return ("raw/X", "raw/var") if "raw" in f and "X" in f["raw"] else ("X", "var")


def row_blocks(
    path: str | Path, rows: np.ndarray, matrix_key: str = "X", block: int = ROW_BLOCK
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Yield `(row_numbers, csr)` for sorted `rows`, one window of `block` stored rows read at a time.

    A window is cut where the selection skips more than ROW_GAP rows, so a scattered selection reads its
    rows, not the rows between them (what a streamed file pays for).
    """
    rows = np.asarray(rows, dtype=np.int64)
    steps = np.diff(rows)
    cuts = np.flatnonzero((np.diff(rows // block) > 0) | (steps > ROW_GAP)) + 1
    with h5py.File(path, "r") as f:
        element = f[matrix_key]
        matrix = ad.io.sparse_dataset(element) if isinstance(element, h5py.Group) else element
        for chunk in np.split(rows, cuts) if len(rows) else []:
            first, last = int(chunk[0]), int(chunk[-1]) + 1
            window = matrix[first:last]
            yield chunk, sp.csr_matrix(window if len(chunk) == last - first else window[chunk - first])


def read_rows(path: str | Path, rows: np.ndarray, matrix_key: str = "X") -> sp.csr_matrix:
    """The given rows of a stored matrix, in the given (any) order."""
    order = np.argsort(rows, kind="stable")
    blocks = [block for _, block in row_blocks(path, np.asarray(rows)[order], matrix_key)]
    if not blocks:
        with h5py.File(path, "r") as f:
            return sp.csr_matrix((0, int(f[matrix_key].attrs["shape"][1])))
    return sp.vstack(blocks, format="csr")[np.argsort(order, kind="stable")]


def write_streamed(
    path: str | Path,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    blocks: Iterable[sp.spmatrix | dict[str, sp.spmatrix]],
    uns: dict | None = None,
    layers: Iterable[str] = (),
    obsm: dict[str, np.ndarray] | None = None,
) -> None:
    """Write an h5ad whose matrices (float32 CSR) arrive as row blocks: memory holds one block at a time.

    A block is X's rows, or with `layers` a mapping of `X` and each layer to the same rows.
    """
    ad.AnnData(obs=obs, var=var, uns=uns or {}, obsm=obsm).write_h5ad(path)
    with h5py.File(path, "a") as f:
        writers = {"X": _CsrWriter(f.create_group("X"))}
        writers |= {name: _CsrWriter(f["layers"].create_group(name)) for name in layers}
        for block in blocks:
            parts = block if isinstance(block, dict) else {"X": block}
            for name, writer in writers.items():
                writer.append(parts[name])
        for name, writer in writers.items():
            if writer.rows != len(obs):
                raise ValueError(f"{path}: {writer.rows} rows of {name} written for {len(obs)} cells")
            writer.finish(len(var))


class _CsrWriter:
    """One CSR matrix of an open h5ad, appended to row block by row block."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        self.arrays = {
            name: group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(CHUNK,))
            for name, dtype in (("data", np.float32), ("indices", np.int32))
        }
        self.indptr, self.nnz = [np.zeros(1, dtype=np.int64)], 0

    @property
    def rows(self) -> int:
        return sum(len(part) for part in self.indptr) - 1

    def append(self, block: sp.spmatrix) -> None:
        block = sp.csr_matrix(block, dtype=np.float32)
        for name, values in (("data", block.data), ("indices", block.indices)):
            self.arrays[name].resize((self.nnz + block.nnz,))
            self.arrays[name][self.nnz :] = values
        self.indptr.append(block.indptr[1:].astype(np.int64) + self.nnz)
        self.nnz += block.nnz

    def finish(self, n_vars: int) -> None:
        indptr = np.concatenate(self.indptr)
        self.group.create_dataset("indptr", data=indptr)
        self.group.attrs.update(
            {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (len(indptr) - 1, n_vars)}
        )


def stored_layers(path: str | Path) -> list[str]:
    """The names of the layers an h5ad holds."""
    with h5py.File(path, "r") as f:
        return sorted(f["layers"]) if "layers" in f else []


def matrix_blocks(
    path: str | Path, rows: np.ndarray, layers: Iterable[str] = ()
) -> Iterator[tuple[np.ndarray, dict[str, sp.csr_matrix]]]:
    """Like `row_blocks` over X, each block with the same rows of the given layers."""
    streams = {"X": row_blocks(path, rows)}
    streams |= {name: row_blocks(path, rows, f"layers/{name}") for name in layers}
    for parts in zip(*streams.values(), strict=True):
        yield parts[0][0], {name: block for name, (_, block) in zip(streams, parts, strict=True)}


def concatenate(
    paths: list[Path],
    join: str,
    out: str | Path,
    obs_columns: list[str],
    *,
    keep: Callable[[pd.DataFrame], np.ndarray] | None = None,
    layers: list[str] = (),
    uns: dict | None = None,
    gene_order: list[str] | None = None,
) -> pd.DataFrame:
    """Stack h5ads with the same obs columns, joining genes (`inner` or `outer`, zeros where absent).

    The join is over the files that hold cells (a file without cells neither shrinks nor grows it; with no
    cells, no genes), in `gene_order` where given (the genes a spec asked, in its order); `out` keeps
    `obs_columns` of obs, of the cells `keep` marks in the stacked obs (all by default), with X and `layers`;
    the stacked obs of those cells is returned. Obs and var are read whole (small); the matrices are copied
    one window of rows at a time.
    """
    variables = [read_frame(p, "var") for p in paths]
    observations = [read_frame(p, "obs") for p in paths]
    stacked = _stacked(observations)
    kept = np.ones(len(stacked), dtype=bool) if keep is None else keep(stacked)
    offsets = np.cumsum([0, *map(len, observations)])
    rows = [np.flatnonzero(kept[start:stop]) for start, stop in itertools.pairwise(offsets)]
    holding = [var.index for var, chosen in zip(variables, rows, strict=True) if len(chosen)]
    genes = _joined_genes(holding, join) if holding else pd.Index([], dtype=str)
    if gene_order is not None:
        genes = pd.Index([g for g in gene_order if g in genes], dtype=genes.dtype)
    features = pd.concat(variables)
    features = features[~features.index.duplicated()].loc[genes]
    blocks = (
        {name: _onto_genes(block, var.index, genes) for name, block in parts.items()}
        for path, var, chosen in zip(paths, variables, rows, strict=True)
        for _, parts in matrix_blocks(path, chosen, layers)
    )
    stacked = stacked[kept]
    write_streamed(
        out, without_unused_categories(stacked[obs_columns]), features, blocks, uns=uns, layers=layers
    )
    return stacked


def _joined_genes(indices: list[pd.Index], join: str) -> pd.Index:
    if join == "outer":
        return reduce(pd.Index.union, indices)
    common = reduce(pd.Index.intersection, indices)
    return indices[0][indices[0].isin(common)]  # the first slice's order


def _onto_genes(block: sp.csr_matrix, genes: pd.Index, joined: pd.Index) -> sp.csr_matrix:
    """A block's columns moved to their positions among the joined genes (genes not joined are dropped)."""
    positions = joined.get_indexer(genes)
    kept = np.flatnonzero(positions >= 0)
    block = sp.csr_matrix(block[:, kept])
    moved = sp.csr_matrix(
        (block.data, positions[kept][block.indices], block.indptr), shape=(block.shape[0], len(joined))
    )
    moved.sort_indices()
    return moved


def without_unused_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns keep only the categories their values use."""
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].cat.remove_unused_categories()
    return frame


def _stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Obs frames one under the other; a column categorical anywhere stays categorical."""
    stacked = pd.concat([f for f in frames if len(f)] or frames[:1])  # empty frames say nothing of dtypes
    for column in stacked.columns:
        if any(isinstance(f[column].dtype, pd.CategoricalDtype) for f in frames):
            stacked[column] = stacked[column].astype("category")
    return stacked
