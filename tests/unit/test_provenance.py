"""A result's provenance: read back from every format, and two builds of one content agree but for time."""

from __future__ import annotations

import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellquery.outputs.exports import write_export
from cellquery.outputs.provenance import BUILT_AT, UNS_KEY, content_digest, describe, read_provenance

STORY = {
    "route": "h5ad",
    "query": "tiny",
    "spec": "name: tiny\norganism: human\n",
    "spec_digest": "0123456789abcdef",
    "instance": {"slug": "demo", "storage_root": "/somewhere"},
    "collection": {"key": "cellxgene-census", "version": "2025-11-08", "uid": "C0001"},
    "census": {"key": "cell-census/2025-11-08/soma", "uid": "S0000", "version": "2025-11-08"},
    "datasets": {
        "d1": {"uid": "A0000", "version": "1", "hash": "h", "key": "k", "title": "t", "selected_cells": 3}
    },
    "software": {"cellquery": "0.1.0"},
    BUILT_AT: "2026-12-01T00:00:00+00:00",
}


def write_result(path, story: dict, counts: np.ndarray) -> None:
    obs = pd.DataFrame({"dataset_id": pd.Categorical(["d1"] * 3)}, index=["d1:a", "d1:b", "d1:c"])
    var = pd.DataFrame(index=["ENSG1", "ENSG2"])
    ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32), obs=obs, var=var, uns={UNS_KEY: story}).write_h5ad(
        path
    )


def test_every_format_keeps_the_story(tmp_path):
    result = tmp_path / "tiny.h5ad"
    write_result(result, STORY, np.eye(3, 2))
    for fmt, name in (("zarr", "tiny.zarr"), ("obs_parquet", "tiny.obs.parquet")):
        write_export(result, fmt, tmp_path / name)
        assert read_provenance(tmp_path / name)["spec_digest"] == STORY["spec_digest"], fmt
    text = describe(read_provenance(result))
    assert "query tiny" in text and "d1: artifact A0000 version 1 hash h" in text and "  name: tiny" in text


def test_the_content_digest_ignores_the_build_time_only(tmp_path):
    paths = [tmp_path / f"{n}.h5ad" for n in "abc"]
    write_result(paths[0], STORY, np.eye(3, 2))
    write_result(paths[1], STORY | {BUILT_AT: "2027-01-01T00:00:00+00:00"}, np.eye(3, 2))
    write_result(paths[2], STORY, np.eye(3, 2) * 2)
    digests = [content_digest(p) for p in paths]
    assert digests[0] == digests[1] != digests[2]


def test_a_file_without_provenance_is_told_in_one_line_and_a_non_zero_exit(tmp_path):
    plain = tmp_path / "plain.h5ad"
    ad.AnnData(X=sp.csr_matrix(np.ones((2, 2), dtype=np.float32))).write_h5ad(plain)
    command = [sys.executable, "-m", "cellquery", "provenance", str(plain)]
    told = subprocess.run(command, capture_output=True, text=True)
    assert told.returncode != 0 and told.stdout == ""
    assert told.stderr.strip().splitlines() == [
        f"cellquery: provenance: {plain} holds no cellquery provenance: it is no cellquery result"
    ]


def not_a_result(tmp_path, kind: str):
    """A path `provenance` may be handed by mistake."""
    path = tmp_path / {"fifo": "pipe.h5ad", "folder": "folder.zarr", "text": "notes.h5ad"}.get(
        kind, "cut.h5ad"
    )
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        (path / "readme.txt").write_text("not a zarr store")
    elif kind == "text":
        path.write_text("name: t-cells\n")
    else:  # an h5ad cut short, as an interrupted copy leaves it
        whole = tmp_path / "whole.h5ad"
        ad.AnnData(X=sp.csr_matrix(np.ones((50, 50), dtype=np.float32))).write_h5ad(whole)
        path.write_bytes(whole.read_bytes()[:2000])
    return path


@pytest.mark.parametrize(
    ("kind", "told"),
    [
        ("fifo", "is a FIFO, not a result file"),
        ("folder", "cannot be read as an AnnData zarr store"),
        ("text", "cannot be read as an h5ad file"),
        ("truncated", "cannot be read as an h5ad file"),
    ],
)
def test_a_path_that_is_no_result_is_one_line_and_never_blocks(tmp_path, kind, told):
    path = not_a_result(tmp_path, kind)
    command = [sys.executable, "-m", "cellquery", "provenance", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)  # a FIFO read would block
    lines = result.stderr.strip().splitlines()
    assert (
        result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"cellquery: provenance: {path} ")
    )
    assert told in lines[0], lines[0]
