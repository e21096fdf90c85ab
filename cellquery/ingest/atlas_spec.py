"""An atlas spec: the versions of one's own atlas, each the h5ads it adds (a dataset is its file's stem: a
later version's file of the same stem replaces it). The atlas is a function of the spec; `ingest` builds
what the spec adds since the last ingest.

    name: kidney-lab
    versions:
      "2026-11-01": [data/batch-1/]          # files, globs or directories of *.h5ad
      "2026-12-01": [data/batch-2/*.h5ad, data/fixed/donor-3.h5ad]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cellquery.errors import SpecError
from cellquery.files.listing import files_named
from cellquery.spec.query_spec import dates_as_text, read_yaml

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEYS = ("name", "versions")


@dataclass(frozen=True)
class AtlasSpec:
    name: str
    versions: dict[str, dict[str, Path]]  # version -> dataset id -> the file it adds (or replaces)
    path: Path

    def added(self, version: str) -> dict[str, Path]:
        return self.versions[version]

    def previous(self, version: str) -> str | None:
        order = list(self.versions)
        return order[order.index(version) - 1] if order.index(version) else None

    def plan(self, version: str) -> dict:
        """What registering a version needs to know (a Snakemake param: the same for a version as long as
        the spec's versions up to it are)."""
        return {"atlas": self.name, "previous": self.previous(version), "members": self.members(version)}

    def members(self, version: str) -> dict[str, str]:
        """The datasets of a version, each with the version whose file it is."""
        held: dict[str, str] = {}
        for tag, added in self.versions.items():
            held |= dict.fromkeys(added, tag)
            if tag == version:
                return held
        raise KeyError(version)


def load_atlas_spec(path: str | Path, base: Path) -> AtlasSpec:
    """Read and check an atlas spec; raises `SpecError`, one line per problem naming the key and value."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"atlas: no such file {str(path)!r}")
    try:
        data = dates_as_text(read_yaml(path))
        return _checked(data, path, base)
    except SpecError as error:
        raise error.within(str(path)) from None


def _checked(data, path: Path, base: Path) -> AtlasSpec:
    if not isinstance(data, dict):
        raise SpecError(f"an atlas spec is a mapping of keys ({', '.join(KEYS)}), got {type(data).__name__}")
    problems = [
        f"{key}: unknown key (an atlas spec has {', '.join(KEYS)})" for key in data if key not in KEYS
    ]
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"name: {name!r} is no atlas name (letters, digits, '.', '_' or '-', up to 64)")
    versions = data.get("versions")
    if not isinstance(versions, dict) or not versions:
        problems.append("versions: give each version's h5ads, e.g. versions: {2026-12-01: [data/]}")
        raise SpecError(*problems)
    found: dict[str, dict[str, Path]] = {}
    for version, entries in versions.items():
        found[str(version)] = _version_files(str(version), entries, base, problems)
    if problems:
        raise SpecError(*problems)
    return AtlasSpec(name, found, path)


def _version_files(version: str, entries, base: Path, problems: list[str]) -> dict[str, Path]:
    where = f"versions: {version}"
    if not NAME.match(version):
        problems.append(f"{where}: is no version tag (letters, digits, '.', '_' or '-', e.g. a date)")
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries):
        problems.append(f"{where}: give a list of h5ad files, globs or directories")
        return {}
    files: dict[str, Path] = {}
    for entry in entries:
        named = [p for p in files_named([entry], base, suffix=".h5ad") if p.is_file()]
        if not named:
            problems.append(f"{where}: {entry!r} names no h5ad file")
        for file in named:
            if file.stem in files and files[file.stem] != file:
                problems.append(f"{where}: two files of dataset {file.stem!r}: {files[file.stem]} and {file}")
            files[file.stem] = file
    return files
