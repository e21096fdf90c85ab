"""A build: the query specs of one run, found, loaded and checked together, and the table of what it made."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from cellquery.errors import foreseen
from cellquery.files.atomic import atomic_path, write_json
from cellquery.files.layout import BUILD_JSON, BUILD_TABLE, QueryFiles
from cellquery.files.listing import files_named
from cellquery.spec.query_spec import Problems, QuerySpec, load_spec

BUILD_COLUMNS = [
    "query",
    "spec",
    "spec_digest",
    "artifact_uid",
    "version",
    "hash",
    "cells",
    "genes",
    "validation",
]


def checked_build(
    entries: list[str] | str,
    base: Path,
    demo,
    storage: dict,
    needs_check,
    owners=lambda keys: {},
    storage_of=None,
) -> tuple[dict[str, QuerySpec], Callable[[], None]]:
    """Every spec of the build, by name, checked in two rounds, each raising one `SpecError` with the problems
    of all the specs: their shape (file, schema, values), then, when every spec is well-formed, each against
    the registry when `needs_check(spec)` and against the target's results under its output key
    (`owners(keys)`: `cellquery.instances.owners`), with the storage settings its source reads with
    (`storage_of(spec)`, default `storage`). Returns the specs and what keeps the checks' findings for
    this run's `resolve` (`cellquery.query.resolve.keep_checked`), to be called when the run starts: a dry run
    writes nothing."""
    from cellquery.instances.owners import takeover
    from cellquery.instances.source import source_for
    from cellquery.query.resolve import check_build_cache_room, keep_checked, one_read_plan, preflight

    problems, found = Problems(), {}
    specs = load_build(files_named(entries, base), problems)
    problems.raise_any()  # a malformed spec is refused before the registry is asked
    owned = owners([spec.output_key for spec in specs.values()])
    for spec in specs.values():
        if problem := takeover(spec, owned.get(spec.output_key)):
            problems.add(f"{spec.path}: {problem}")
    for name, spec in specs.items():
        if needs_check(spec):
            with problems.check(), foreseen(str(spec.path)):
                found[name] = preflight(
                    spec, source_for(spec, demo), (storage_of or (lambda _: storage))(spec)
                )
    if len(found) > 1:
        one_read_plan(list(found.values()))
    with problems.check(), foreseen("cache_dir"):
        check_build_cache_room([table for _, table in found.values()], storage)
    problems.raise_any()
    for name, checked in found.items():
        for warning in checked[0]["warnings"]:
            print(f"cellquery: warning: {specs[name].path}: {warning}", file=sys.stderr)

    def keep() -> None:
        for name, checked in found.items():
            keep_checked(checked, specs[name], source_for(specs[name], demo), QueryFiles(name).checked)

    return specs, keep


def load_build(paths: list[Path], problems: Problems) -> dict[str, QuerySpec]:
    """The specs that load, by name. Every problem of every spec goes to `problems` (one line each, naming
    its file), as does a second spec with a name or an output key already taken (one line naming both)."""
    specs = []
    for path in paths:
        with problems.check(), foreseen(str(path)):
            specs.append(load_spec(path))
    by_name = _first_of_each(specs, "name", lambda s: s.name, problems)
    _first_of_each(by_name.values(), "output key", lambda s: s.output_key, problems)
    if not paths:
        problems.add("queries: no query spec found (give files, globs or directories of *.yaml)")
    return by_name


def _first_of_each(specs, what: str, key, problems: Problems) -> dict[str, QuerySpec]:
    """The first spec of each `key`; a later spec with the same one is a problem naming both files."""
    seen: dict[str, QuerySpec] = {}
    for spec in specs:
        first = seen.setdefault(key(spec), spec)
        if first is not spec:
            problems.add(f"{spec.path}: {what} {key(spec)!r} is also the {what} of {first.path}")
    return seen


def outdate_unfinished_build(names: list[str]) -> None:
    """Remove the build table when a query of the build has no receipt (never finished, or its files were
    damaged and discarded): Snakemake does not rerun a job for a missing intermediate file, so only a missing
    table makes it build that query."""
    if any(not QueryFiles(name).receipt.exists() for name in names):
        for path in (BUILD_TABLE, BUILD_JSON):
            path.unlink(missing_ok=True)


def write_build_table(specs: dict[str, QuerySpec], table_out: Path, json_out: Path) -> pd.DataFrame:
    """`results/build.tsv` and `build.json`: per query, the spec, what was registered, and validation."""
    rows = []
    for name, spec in specs.items():
        files = QueryFiles(name)
        receipt = json.loads(files.receipt.read_text())
        report = json.loads(files.validation.read_text())
        rows.append(
            {
                "query": name,
                "spec": str(spec.path),
                "spec_digest": spec.digest,
                "artifact_uid": receipt["artifact_uid"],
                "version": receipt["version"],
                "hash": receipt["hash"],
                "cells": receipt["n_obs"],
                "genes": receipt["n_vars"],
                "validation": report["status"],
            }
        )
    table = pd.DataFrame(rows, columns=BUILD_COLUMNS)
    with atomic_path(table_out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    write_json(json_out, rows)
    return table
