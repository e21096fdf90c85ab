"""A local census store that is gone or damaged is one line naming it, not a SOMA traceback."""

from __future__ import annotations

import pytest

from cellquery.errors import SourceError
from cellquery.query.census_route import open_store


def opened(store: dict) -> str:
    with pytest.raises(SourceError) as raised, open_store(store):
        pass
    return str(raised.value)


def test_a_missing_store_is_one_line(tmp_path):
    store = {"path": str(tmp_path / "soma"), "root": str(tmp_path)}
    assert opened(store) == f"census store {tmp_path / 'soma'} is missing (the instance's storage lost it)"


def test_a_damaged_store_is_one_line(tmp_path):
    damaged = tmp_path / "soma"
    damaged.mkdir()
    (damaged / "__group").write_bytes(b"\x00" * 64)  # the group's metadata overwritten
    told = opened({"path": str(damaged), "root": str(tmp_path)})
    assert told.startswith(f"census store {damaged} cannot be read: ") and "\n" not in told
