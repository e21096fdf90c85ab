"""Atomic writes: a writer that fails leaves neither a partial target nor its temporary; a reader never sees
a half-written file; a killed writer's leftovers are cleared by the next write."""

from __future__ import annotations

import json

import pytest

from cellquery.files.atomic import atomic_path, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"version": 2, "trunc')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_new_target_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "result.h5ad"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert not target.exists() and tmp.suffix == ".h5ad"
        tmp.write_bytes(b"whole file")
    assert target.read_bytes() == b"whole file"


def test_a_killed_writers_temporary_is_cleared_by_the_next_write(tmp_path):
    target = tmp_path / "out.json"
    stale = tmp_path / f".tmp-999999-{target.name}"
    stale.write_text("left by a killed job")
    write_json(target, {"ok": True})
    assert not stale.exists() and json.loads(target.read_text()) == {"ok": True}


def test_a_directory_target_is_replaced_whole(tmp_path):
    target = tmp_path / "store"
    for version in (1, 2):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / f"v{version}").write_text("x")
    assert [p.name for p in target.iterdir()] == ["v2"]
