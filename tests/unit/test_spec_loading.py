"""Spec loading without a registry: the shipped specs load, and every problem the schema and the semantic
checks can see is reported one line each, naming the key and the value."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO
from test_bad_specs import CORPUS, GENERATED, MANY_PROBLEMS, expected_error

from cellquery.errors import SpecError
from cellquery.files.layout import BUILD_FILES
from cellquery.spec.query_spec import load_spec

SHIPPED = sorted((REPO / "config" / "queries").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_spec_loads(path):
    spec = load_spec(path)
    assert spec.name == path.stem and spec.organism.startswith("NCBITaxon:")


def test_bad_specs_the_loader_can_judge_fail_with_their_expected_line():
    caught = 0
    for path in sorted(CORPUS.glob("*.yaml")):
        try:
            load_spec(path)
        except SpecError as error:
            caught += 1
            assert any(expected_error(path) in problem for problem in error.problems), (path, error.problems)
    assert caught >= 25  # the rest need the registry (unknown names, empty matches): tests/test_bad_specs.py


@pytest.mark.parametrize("case", list(GENERATED))
def test_a_spec_past_a_bound_fails_with_one_line(tmp_path, case):
    text, expected = GENERATED[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text.format(name=case))
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert len(raised.value.problems) == 1 and expected in raised.value.problems[0], raised.value.problems


def test_every_schema_problem_of_a_spec_is_reported(tmp_path):
    spec, expected = MANY_PROBLEMS["schema"]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert sorted(raised.value.problems) == sorted(f"{path}: {problem}" for problem in expected)


def test_the_slices_digest_follows_the_cell_criteria_only(tmp_path):
    base = {"name": "digest", "organism": "human", "cells": {"tissue": "kidney"}}
    variants = {
        "same": base,
        "fetch": {**base, "fetch": "stream"},
        "output": {**base, "output": {"gene_join": "outer"}},
        "cells": {**base, "cells": {"tissue": "blood"}},
    }
    digests = {}
    for name, data in variants.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        digests[name] = (load_spec(path).cells_digest, load_spec(path).digest)
    assert digests["fetch"][0] == digests["output"][0] == digests["same"][0] != digests["cells"][0]
    assert len({d[1] for d in digests.values()}) == 4  # the spec digest sees every change


@pytest.mark.parametrize("taken", [path.name for path in BUILD_FILES])
def test_a_query_cannot_take_the_name_of_a_file_the_build_writes(tmp_path, taken):
    """`results/<name>/` and `logs/<name>/` sit beside the build's own files: a query named like one would
    write its folder where the file goes (or the file where the folder goes)."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": taken, "organism": "human", "cells": {"tissue": "blood"}}))
    with pytest.raises(SpecError, match=f"name: '{re.escape(taken)}' is the name of the build's own"):
        load_spec(path)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("s3://bucket/x.h5ad", "starts like a URL or a drive letter"),
        ("C:/results/x.h5ad", "starts like a URL or a drive letter"),
        ("~/results/x.h5ad", "starts like a home folder"),
        ("cellquery//x.h5ad", "has an empty segment (two slashes in a row)"),
        (".lamindb/x.h5ad", "lies in .lamindb/, the folder lamindb manages itself"),
    ],
)
def test_a_key_that_is_no_path_inside_the_storage_is_one_line(tmp_path, key, problem):
    """lamindb registers these as given; a spec refuses them when it is read."""
    path = tmp_path / "spec.yaml"
    data = {"name": "keyed", "organism": "human", "output": {"key": key}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert raised.value.problems == [
        f"{path}: output.key: {key!r} {problem}; write a relative path such as cellquery/x.h5ad"
    ]
