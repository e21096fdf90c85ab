"""Atomic writes: build under a temporary name beside the target, rename when complete; a full disk stops
the writer with one line naming the file."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cellquery.errors import DiskFull


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; it replaces `path` only if the block finishes.

    Temporaries a killed writer left for the same target are removed first (one job writes a target at a
    time: Snakemake locks the working directory). A full disk raises `DiskFull` naming `path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".tmp-*-{target.name}"):
        _remove(stale)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")  # keeps the suffix readers look at
    try:
        yield tmp
        if tmp.is_dir() and target.is_dir():
            shutil.rmtree(target)  # a directory cannot be replaced in one step; the old one was stale
        os.replace(tmp, target)
    except Exception as error:
        if out_of_space(error):
            raise DiskFull(
                f"{target}: no space left on the disk of {target.parent}; free some or write elsewhere, "
                "then run again"
            ) from None
        raise
    finally:
        _remove(tmp)


def out_of_space(error: BaseException) -> bool:
    """The error, or one it arose from (h5py raises a second one closing the file), is a full disk."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def write_json(path: str | os.PathLike, payload: object) -> None:
    """Write JSON atomically, pretty-printed and newline-terminated."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
