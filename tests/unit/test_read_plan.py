"""The stream-or-cache choice: the estimate grows with the blocks a selection touches, and `auto` streams
only small clustered selections of files not already cached."""

from __future__ import annotations

import numpy as np

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
