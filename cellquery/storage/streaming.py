"""Stream or cache: read only the byte ranges a slice needs from an h5ad in object storage, or download it.

A streamed h5ad is opened through an s3fs file with a block cache (BLOCK-sized ranged reads), and the slice
reads obs, the gene table, the row pointers and then only the stored rows it selects: the same reads as a
slice of a local file, so the streamed slice equals the cached one. Streaming pays for small, clustered
selections; a download pays for large or scattered ones and for files read again. `auto` picks, per artifact,
the mode its estimate says moves fewer bytes (see `estimated_stream_bytes`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from cellquery.storage.settings import DOWNLOAD_PATIENCE_S

log = logging.getLogger(__name__)

BLOCK = 2 * 2**20  # bytes per ranged read of a streamed file (smaller blocks: more requests)
MAX_BLOCKS = 64  # blocks a streamed file keeps in memory (128 MiB)
# The layout of a CELLxGENE h5ad as the estimate sees it: raw counts (raw/X: data and indices) are about
# half the file, beside the normalized X; obs, var, row pointers and HDF5 metadata a few percent of it,
# spread over a few blocks at least.
COUNTS_SHARE = 0.5
FRAME_SHARE = 0.03
FRAME_BLOCKS = 4
# auto streams when the estimate is under a quarter of a download: streamed bytes come in 2 MiB requests,
# one after another, a download in one GET; B9 measured streaming about 4x slower per byte on loopback,
# and a link with more latency per request widens the gap.
STREAM_BELOW = 0.25
MODES = ("auto", "cache", "stream")


def estimated_stream_bytes(size: int, n_obs: int, positions: np.ndarray) -> int:
    """Bytes a streamed slice moves: the frames, and each block of the counts' data and indices arrays that
    a selected row lies in. `positions` are the selected cells' places in the file, as fractions of its rows
    (rows are taken to be of even size)."""
    counts, frames = COUNTS_SHARE * size, FRAME_SHARE * size + FRAME_BLOCKS * BLOCK
    if not len(positions) or not n_obs:
        return int(min(size, frames))
    rows_per_block = max(1.0, BLOCK / (counts / 2 / n_obs))
    touched = len(np.unique(np.floor(np.asarray(positions) * n_obs / rows_per_block)))
    return int(min(size, frames + min(counts, 2 * touched * BLOCK)))


def choose(mode: str, download_bytes: int, stream_bytes: int) -> str:
    """`cache` or `stream` for a remote artifact: the one asked for, or under `auto` the cheaper one (a copy
    already cached costs nothing to download)."""
    if mode != "auto":
        return mode
    return "stream" if stream_bytes < STREAM_BELOW * download_bytes else "cache"


@contextmanager
def remote_file(fs, remote: str) -> Iterator:
    """`remote` opened for ranged reads through a block cache; `bytes_moved` counts what it fetched."""
    logging.getLogger("fsspec").setLevel(logging.WARNING)  # it logs every block it fetches
    with fs.open(
        remote, "rb", block_size=BLOCK, cache_type="blockcache", cache_options={"maxblocks": MAX_BLOCKS}
    ) as handle:
        yield handle


def bytes_moved(handle) -> int:
    return int(handle.cache.total_requested_bytes)


def streamed(read, fs, remote: str, label: str, patience_s: float = DOWNLOAD_PATIENCE_S):
    """`read(handle)` on the remote file, started again while `patience_s` lasts when the connection fails
    (as a download is, `cellquery.storage.fetch`); logs the bytes it moved. `read` must be safe to repeat."""
    from cellquery.storage.fetch import Patience, refused
    from cellquery.storage.settings import refusal

    patience = Patience(patience_s)
    while True:
        started = time.monotonic()
        try:
            with remote_file(fs, remote) as handle:
                result = read(handle)
                moved = bytes_moved(handle)
        except Exception as error:
            if refusal(error):
                raise refused(label, remote, error, fs) from None
            if not isinstance(error, (OSError, TimeoutError)):
                raise
            patience.wait_after(error, "streaming", label)
            continue
        elapsed = time.monotonic() - started
        rate = moved / 1e6 / max(elapsed, 1e-9)
        log.info("%s: streamed %.1f MB in %.1f s (%.1f MB/s)", label, moved / 1e6, elapsed, rate)
        return result, moved
