"""Out-of-core access to h5ad files: frames without the matrix, matrix rows in blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROW_BLOCK = 20_000


def read_frame(path: str | Path, key: str) -> pd.DataFrame:
    """Read one dataframe element (`obs`, `var`, `raw/var`) without touching the matrices."""
    with h5py.File(path, "r") as f:
        return ad.io.read_elem(f[key])


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
    """Yield `(row_numbers, csr)` for sorted `rows`, reading only the stored ranges they span."""
    rows = np.asarray(rows, dtype=np.int64)
    with h5py.File(path, "r") as f:
        element = f[matrix_key]
        matrix = ad.io.sparse_dataset(element) if isinstance(element, h5py.Group) else element
        for start in range(0, len(rows), block):
            chunk = rows[start : start + block]
            first, last = int(chunk[0]), int(chunk[-1]) + 1
            dense_run = matrix[first:last]
            selected = dense_run[chunk - first]
            yield chunk, sp.csr_matrix(selected)
