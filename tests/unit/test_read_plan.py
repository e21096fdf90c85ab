"""The stream-or-cache choice: the estimate grows with the blocks a selection touches, and `auto` streams
only small clustered selections of files not already cached; a build decides once for a file its queries
share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellquery.query.resolve import one_read_plan
from cellquery.storage.streaming import BLOCK, choose, estimated_stream_bytes

SIZE, N_OBS = 1_000_000_000, 200_000


def test_a_clustered_selection_is_estimated_below_a_scattered_one_of_the_same_size():
    rng = np.random.default_rng(0)
    clustered = np.arange(10_000) / N_OBS
    scattered = np.sort(rng.choice(N_OBS, 10_000, replace=False)) / N_OBS
    small, large = (
        estimated_stream_bytes(SIZE, N_OBS, clustered),
        estimated_stream_bytes(SIZE, N_OBS, scattered),
    )
    assert small < 0.1 * SIZE < large <= SIZE


def test_the_estimate_has_a_floor_and_a_ceiling():
    nothing = estimated_stream_bytes(SIZE, N_OBS, np.array([]))
    everything = estimated_stream_bytes(SIZE, N_OBS, np.arange(N_OBS) / N_OBS)
    assert 0 < nothing < 0.1 * SIZE and everything <= SIZE and nothing >= 4 * BLOCK


def test_auto_streams_small_selections_and_downloads_large_ones():
    assert choose("auto", SIZE, SIZE // 20) == "stream"
    assert choose("auto", SIZE, SIZE // 2) == "cache"
    assert choose("auto", 0, SIZE // 100) == "cache"  # a copy already cached costs nothing
    assert choose("stream", SIZE, SIZE) == "stream" and choose("cache", SIZE, 1) == "cache"


def read_table(*reads: tuple[str, str, int]) -> pd.DataFrame:
    """A query's manifest read plan: (uid, fetch, stream bytes) per artifact of SIZE bytes."""
    table = pd.DataFrame(reads, columns=["uid", "fetch", "stream_bytes"]).assign(download_bytes=SIZE)
    return table.assign(to_fetch=table["stream_bytes"].where(table["fetch"] == "stream", SIZE))


def query_of(fetch: str | None = None) -> dict:
    return {"spec": {"fetch": fetch} if fetch else {}, "storage": {"fetch": "auto"}}


def test_a_build_reads_an_artifact_its_queries_share_one_way():
    """Two queries each streaming a fifth of a shared file would move 0.4 of it: downloaded once instead;
    a file one query downloads is read from that copy by the others; a file one query wants stays its own."""
    first = read_table(("shared", "stream", SIZE // 5), ("copied", "cache", SIZE), ("own", "stream", 9))
    second = read_table(("shared", "stream", SIZE // 5), ("copied", "stream", SIZE // 50))
    one_read_plan([(query_of(), first), (query_of(), second)])
    assert list(first["fetch"]) == ["cache", "cache", "stream"] and list(second["fetch"]) == [
        "cache",
        "cache",
    ]
    for table in (first, second):
        assert (table.loc[table["fetch"] == "cache", "to_fetch"] == SIZE).all()


def test_a_spec_that_says_how_to_fetch_keeps_its_way():
    told = read_table(("shared", "stream", SIZE // 5))
    other = read_table(("shared", "cache", SIZE))
    one_read_plan([(query_of("stream"), told), (query_of(), other)])
    assert list(told["fetch"]) == ["stream"] and list(other["fetch"]) == ["cache"]
