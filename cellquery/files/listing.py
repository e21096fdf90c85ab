"""Files named the way a shell user names them: files, globs and directories, each file once."""

from __future__ import annotations

import glob
from pathlib import Path


def files_named(entries: list[str] | str, base: Path, suffix: str = ".yaml") -> list[Path]:
    """The files named by `entries` (files, globs or directories of `*<suffix>`), in order, once each
    however spelt (compared resolved).

    A relative entry that matches nothing in the working directory is looked up under `base` (the
    workflow's folder). A directory's hidden files (an editor's `.#x.yaml`, macOS's `._x.yaml`) are skipped,
    as a shell glob skips them; a file whose name holds glob characters is itself.
    """
    found: dict[Path, Path] = {}
    for entry in [entries] if isinstance(entries, str) else entries:
        path = Path(_located(str(entry), base))
        if path.is_dir():
            listed = sorted(p for p in path.glob(f"*{suffix}") if not p.name.startswith("."))
        elif path.exists() or not glob.has_magic(str(path)):
            listed = [path]
        else:
            listed = sorted(Path(p) for p in glob.glob(str(path)))
        for file in listed:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def _located(entry: str, base: Path) -> str:
    if Path(entry).is_absolute() or _matches(entry) or not _matches(str(base / entry)):
        return entry
    return str(base / entry)


def _matches(entry: str) -> bool:
    return Path(entry).exists() or bool(glob.glob(entry))
