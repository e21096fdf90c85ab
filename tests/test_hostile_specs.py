"""Hostile specs: valid specs mutated the way a careless user or an attacker would (wrong types, unicode
look-alikes and control characters, huge, empty, negative and non-finite values, deleted and duplicated
keys, aliases), put through the whole spec check in-process (`cellquery.query.build.checked_build`, what the
Snakefile runs before any job). A rejected spec gets exactly one `cellquery:` line (or, for a value holding
several problems, a line each, all naming its key), a non-zero exit, no traceback and nothing written; an
accepted one is a spec the registry answers. A few mutants also go through the real snakemake and must give
the same line.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cellquery.errors import one_line_exit
from cellquery.files.layout import BUILD_FILES
from cellquery.query.build import checked_build
from cellquery.storage.settings import STORAGE_DEFAULTS

SETTINGS = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
RICH_SPEC = {
    "name": "hostile",
    "organism": "human",
    "source": {"collection": "cellxgene-census", "version": "2025-11-08"},
    "artifacts": {"size": {"min": 0, "max": 10**9}, "created_by": ["sunitaj"], "key_patterns": ["*.h5ad"]},
    "cells": {
        "cell_type": {"descendants_of": "T cell"},
        "tissue": ["blood", "UBERON:0002106"],
        "disease": {"not_in": ["COVID-19"]},
        "raw_sum": {"gt": 10, "le": 1e6},
        "is_primary_data": True,
    },
    "genes": ["CD3E", "CD4", "ENSG00000105374"],
    "obs_columns": ["cell_type", "tissue", "donor_id"],
    "sample": {"max_cells": 50, "per": ["cell_type"], "seed": 3},
    "output": {"key": "cellquery/hostile.h5ad", "gene_join": "outer", "formats": ["zarr"]},
}
BASES = [
    RICH_SPEC,
    *(yaml.safe_load(p.read_text()) for p in sorted((REPO / "config/queries").glob("*.yaml"))),
]
# Characters that look like others, or that no one sees: Cyrillic Т and е, a zero-width space, a
# right-to-left mark, NUL, a tab, an escape, a lone surrogate, a private-use character
HIDDEN = ["\u0422", "\u0435", "\u200b", "\u200f", "\x00", "\t", "\x1b", "\ud800", "\ue000"]
HOSTILE_VALUES = st.one_of(
    st.sampled_from([None, True, False, "", [], {}, 0, -1, -(2**70), 2**64, 1e308, -0.0, 5e-324]),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from(HIDDEN + list("T cel")), min_size=1, max_size=8),
    st.builds(lambda n: "x" * n, st.sampled_from([1_025, 5_000])),
    st.builds(lambda n: [f"v{i}" for i in range(n)], st.sampled_from([1, 1_001])),
    st.recursive(st.just("T cell"), lambda inner: st.lists(inner, min_size=1, max_size=2), max_leaves=8),
    st.dictionaries(
        st.sampled_from(["gt", "not_in", "descendants_of", "typo", ""]), st.integers(), max_size=1
    ),
)


def paths(value, prefix=()) -> list[tuple]:
    """Every key path and list position in a spec."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        return found + [p for key, item in value.items() for p in paths(item, (*prefix, key))]
    if isinstance(value, list):
        return found + [p for index, item in enumerate(value) for p in paths(item, (*prefix, index))]
    return found


def parent_of(spec, path):
    for step in path[:-1]:
        spec = spec[step]
    return spec


@st.composite
def mutants(draw) -> tuple[str, str]:
    """(a mutated spec's YAML text, what was done)."""
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    path = draw(st.sampled_from(paths(spec)))
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "rename", "duplicate", "alias"]))
    parent, last = parent_of(spec, path), path[-1]
    if kind == "replace":
        parent[last] = draw(HOSTILE_VALUES)
    elif kind == "delete":
        del parent[last]
    elif kind == "rename" and isinstance(last, str):
        parent[last.replace("e", "\u0435", 1) + draw(st.sampled_from(["", "s", "\u200b"]))] = parent.pop(last)
    elif kind == "alias":  # the same object twice: the YAML dumper writes an anchor and an alias
        parent[last] = spec.setdefault("genes", ["CD3E"])
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=draw(st.booleans()))
    if kind == "duplicate":
        text += text.splitlines()[0] + "\n"  # a key given twice
    return text, f"{kind} {list(path)}"


@pytest.fixture(scope="module")
def check(demo, ln, tmp_path_factory):
    """The spec check as the Snakefile runs it, in a project folder of its own: (exit code, output, files
    written) for a spec's text."""
    project = tmp_path_factory.mktemp("hostile-project")

    def run(text: str, capsys, spec_path: Path) -> tuple[int, str, list[str]]:
        shutil.rmtree(project)  # what an accepted spec's check kept, from an earlier call
        project.mkdir()
        spec_path.write_text(text, errors="surrogatepass")
        before = os.getcwd()
        os.chdir(project)
        try:
            with one_line_exit():
                checked_build([str(spec_path)], REPO, demo, STORAGE_DEFAULTS, lambda spec: True)
            code = 0
        except SystemExit as exit:
            code = exit.code
        finally:
            os.chdir(before)
        captured = capsys.readouterr()
        written = [str(p.relative_to(project)) for p in project.rglob("*")]
        return code, captured.out + captured.err, written

    return run


def assert_one_line_or_accepted(outcome, what: str) -> None:
    code, output, written = outcome
    lines = [line for line in output.splitlines() if line.strip()]
    if code == 0:  # accepted: at most the spec check's warnings (a value selecting no cell, say)
        assert not problem_lines(output), (what, output)
        return
    assert code == 1 and lines and all(line.startswith("cellquery: ") for line in lines), (what, output)
    assert "failed unexpectedly" not in output and "Traceback" not in output, (what, output)
    assert len(lines) == 1 or problems_of_one_key(lines), (what, output)
    assert not written, (what, written)


def problem_lines(output: str) -> list[str]:
    """cellquery's lines that refuse something: every `cellquery:` line but the spec check's warnings."""
    return [
        line
        for line in output.splitlines()
        if line.startswith("cellquery:") and not line.startswith("cellquery: warning:")
    ]


def problems_of_one_key(lines: list[str]) -> bool:
    """One mutated value may hold several problems, each its own line, all naming that one key: unknown
    values (the first ten named, the rest counted: `query_spec.unknown_values`), list items of the wrong
    type."""
    keys = {line.split(": ")[2].split(".")[0] for line in lines}
    return len(keys) == 1 and len(lines) <= 11


def outcome_kind(outcome) -> str:
    """`accepted`, or the key and the first words of the problem."""
    if outcome[0] == 0:
        return "accepted"
    problem = outcome[1].split(": ", 2)[-1]
    return " ".join(problem.split()[:4])


@pytest.mark.slow
@pytest.mark.parametrize("base", range(len(BASES)))
def test_the_specs_mutated_are_accepted(check, capsys, tmp_path, base):
    outcome = check(yaml.safe_dump(BASES[base], sort_keys=False), capsys, tmp_path / "spec.yaml")
    assert outcome[0] == 0, outcome[1]


@pytest.mark.slow
@SETTINGS
@given(mutant=mutants())
def test_a_hostile_spec_is_rejected_with_one_line_or_answered(check, capsys, tmp_path_factory, mutant):
    text, what = mutant
    outcome = check(text, capsys, tmp_path_factory.getbasetemp() / "hostile.yaml")
    assert_one_line_or_accepted(outcome, what)
    event(outcome_kind(outcome))  # pytest --hypothesis-show-statistics: what the mutants met


# Names and keys shaped like the places a build writes, or like paths that leave the storage
PLACES = [
    *(path.name for path in BUILD_FILES),
    "census",
    ".",
    "..",
    ".hidden",
    "~",
    "~user",
    "C:",
    "c:\\x",
    "s3:",
    "https:",
    "/",
    "\\",
    ".lamindb",
    "cell-census",
    "results",
    "logs",
    "x.yaml",
    "*",
    "a?b",
    "[ab]",
]
SEGMENTS = st.one_of(
    st.sampled_from(PLACES),
    st.text(alphabet=st.sampled_from([*"./~:\\*-_aZ0 ", *HIDDEN]), min_size=1, max_size=10),
)
KEYS = st.builds(
    lambda segments, suffix: "/".join(segments) + suffix,
    st.lists(st.one_of(SEGMENTS, st.just("")), min_size=1, max_size=4),
    st.sampled_from([".h5ad", "", "/"]),
)


@st.composite
def placed_mutants(draw) -> tuple[str, str]:
    """(a valid spec's YAML text with its name or output key shaped like a place, what was done)."""
    spec = copy.deepcopy(draw(st.sampled_from(BASES)))
    if draw(st.booleans()):
        spec["name"] = draw(SEGMENTS)
        what = f"name {spec['name']!r}"
    else:
        spec.setdefault("output", {})["key"] = draw(KEYS)
        what = f"output.key {spec['output']['key']!r}"
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), what


def a_place_of_its_own(spec: dict) -> bool:
    """An accepted name is one plain folder name that is none of the build's; an accepted key a relative
    path inside the storage, outside lamindb's folder and the census stores'."""
    name, key = spec["name"], (spec.get("output") or {}).get("key", "cellquery/x.h5ad")
    builds = {path.name for path in BUILD_FILES} | {"census"}
    segments = key.split("/")
    return (
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) is not None
        and name not in builds
        and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:|[~/\\]", key)
        and not {"", ".", ".."} & set(segments)
        and segments[0] not in (".lamindb", "cell-census")
        and key.endswith(".h5ad")
    )


@pytest.mark.slow
@SETTINGS
@given(mutant=placed_mutants())
def test_a_name_or_key_shaped_like_a_place_is_refused_in_one_line_or_is_a_place_of_its_own(
    check, capsys, tmp_path_factory, mutant
):
    text, what = mutant
    outcome = check(text, capsys, tmp_path_factory.getbasetemp() / "placed.yaml")
    assert_one_line_or_accepted(outcome, what)
    if outcome[0] == 0:
        assert a_place_of_its_own(yaml.safe_load(text)), (what, outcome)
    event(outcome_kind(outcome))


SNAKEMAKE_MUTANTS = {
    "nan-bound": {**RICH_SPEC, "cells": {"raw_sum": {"gt": math.nan}}},
    "look-alike-cell-type": {**RICH_SPEC, "cells": {"cell_type": "\u0422 cell"}},
    "huge-seed": {**RICH_SPEC, "sample": {"max_cells": 5, "seed": 2**64}},
    "aliased-lists": {**RICH_SPEC, "obs_columns": RICH_SPEC["genes"]},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SNAKEMAKE_MUTANTS))
def test_the_real_snakemake_gives_the_same_line(demo, check, capsys, tmp_path, case):
    path = tmp_path / "spec.yaml"
    in_process = check(yaml.safe_dump(SNAKEMAKE_MUTANTS[case], sort_keys=False), capsys, path)
    assert_one_line_or_accepted(in_process, case)
    result = snakemake(demo.project, "--config", f"query={path}", check=False)
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("cellquery: ")]
    assert result.returncode != 0 and "Building DAG" not in output and "Traceback" not in output, output
    assert lines == [in_process[1].strip()], output


@pytest.mark.slow
def test_every_artifact_criterion_is_answered_by_either_database(instance, tmp_path):
    """The registry filters of `artifacts:` as SQLite and PostgreSQL run them (key globs once reached
    PostgreSQL in Python's regex dialect, which it refuses)."""
    path = tmp_path / "artifact-criteria.yaml"
    path.write_text(yaml.safe_dump({**RICH_SPEC, "name": "artifact-criteria"}, sort_keys=False))
    config = [f"demo_db_url={instance.db_url}"] if instance.db_url else []
    result = snakemake(instance.project, "--dry-run", "--config", f"query={path}", *config, check=False)
    assert result.returncode == 0 and not problem_lines(result.stderr), result.stderr[-3000:]
