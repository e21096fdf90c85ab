"""An atlas spec: the versions of one's own atlas, each the datasets it adds: h5ad files (a dataset is its
file's stem), or datasets of another instance's `cellxgene-census` collection, recorded zero-copy (a dataset
is its id). A later version's dataset of the same name replaces it. The atlas is a function of the spec;
`ingest` builds what the spec adds since the last ingest.

    name: kidney-lab
    versions:
      "2026-11-01": [data/batch-1/]          # files, globs or directories of *.h5ad
      "2026-12-01":
        - data/batch-2/*.h5ad
        - data/fixed/donor-3.h5ad
        - instance: laminlabs/cellxgene     # or demo, atlas:<name>
          version: 2025-01-30               # its collection version (the latest when left out)
          datasets: [<dataset id>, ...]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cellquery.errors import SpecError
from cellquery.files.listing import files_named
from cellquery.spec.query_spec import dates_as_text, is_instance_name, read_yaml

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEYS = ("name", "versions")
IMPORT_KEYS = ("instance", "version", "datasets")


@dataclass(frozen=True)
class Imported:
    """A dataset of another instance's `cellxgene-census` collection (at `version`, else its latest)."""

    instance: str
    version: str | None

    def __str__(self) -> str:
        return f"{self.instance} {self.version or '(its latest version)'}"

    @property
    def source_name(self) -> str:
        """The instance as a file name (`laminlabs--cellxgene`, `atlas-<name>`)."""
        return self.instance.replace("/", "--").replace(":", "-")


@dataclass(frozen=True)
class AtlasSpec:
    name: str
    versions: dict[str, dict[str, Path | Imported]]  # version -> dataset -> what it adds (or replaces)
    path: Path

    def files(self, version: str) -> dict[str, Path]:
        """The h5ad files a version adds, by dataset."""
        return {d: f for d, f in self.versions[version].items() if isinstance(f, Path)}

    def imports(self, version: str, source_name: str | None = None) -> dict[str, Imported]:
        """The datasets a version records from other instances (from one of them: `source_name`)."""
        return {
            d: i
            for d, i in self.versions[version].items()
            if isinstance(i, Imported) and source_name in (None, i.source_name)
        }

    def import_sources(self, version: str) -> dict[str, str]:
        """The instances a version records datasets of: file name -> slug."""
        return {i.source_name: i.instance for i in self.imports(version).values()}

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
    found: dict[str, dict[str, Path | Imported]] = {}
    for version, entries in versions.items():
        found[str(version)] = _version_datasets(str(version), entries, base, problems)
    for version, datasets in found.items():
        problems += [
            f"versions: {version}: instance: {i.instance!r} is this atlas: give another instance"
            for i in {i for i in datasets.values() if isinstance(i, Imported)}
            if i.instance == f"atlas:{name}"
        ]
    if problems:
        raise SpecError(*problems)
    return AtlasSpec(name, found, path)


def _version_datasets(version: str, entries, base: Path, problems: list[str]) -> dict[str, Path | Imported]:
    where = f"versions: {version}"
    if not NAME.match(version):
        problems.append(f"{where}: is no version tag (letters, digits, '.', '_' or '-', e.g. a date)")
    if isinstance(entries, str | dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str | dict) for e in entries):
        problems.append(
            f"{where}: give a list of h5ad files, globs or directories, or of another instance's datasets "
            "({instance: <slug>, datasets: [<id>, ...]})"
        )
        return {}
    datasets: dict[str, Path | Imported] = {}
    for entry in entries:
        if isinstance(entry, str):
            found = _files(entry, base, where, problems)
        else:
            found = _imported(entry, where, problems)
        for dataset, what in found.items():
            if dataset in datasets and datasets[dataset] != what:
                problems.append(f"{where}: dataset {dataset!r} given twice: {datasets[dataset]} and {what}")
            datasets[dataset] = what
    return datasets


def _files(entry: str, base: Path, where: str, problems: list[str]) -> dict[str, Path]:
    named = [p for p in files_named([entry], base, suffix=".h5ad") if p.is_file()]
    if not named:
        problems.append(f"{where}: {entry!r} names no h5ad file")
    return {file.stem: file for file in named}


def _imported(entry: dict, where: str, problems: list[str]) -> dict[str, Imported]:
    """Another instance's datasets: `{instance, version (optional), datasets}`."""
    problems += [
        f"{where}: {key}: unknown key (datasets of another instance: {', '.join(IMPORT_KEYS)})"
        for key in entry
        if key not in IMPORT_KEYS
    ]
    instance, version, datasets = entry.get("instance"), entry.get("version"), entry.get("datasets")
    if not is_instance_name(instance):
        problems.append(f"{where}: instance: {instance!r} is no instance (demo, atlas:<name> or owner/name)")
    if version is not None and not (isinstance(version, str) and NAME.match(version)):
        problems.append(f"{where}: version: {version!r} is no collection version (e.g. 2025-01-30)")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) for d in datasets):
        problems.append(f"{where}: datasets: give the dataset ids to record, e.g. datasets: [<id>, ...]")
        return {}
    return dict.fromkeys(datasets, Imported(str(instance), version))
