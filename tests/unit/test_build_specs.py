"""A build's specs: found from files, globs and directories; every problem of every spec reported; two
specs with one name or one output key reported in one line naming both files."""

from __future__ import annotations

import os

import pytest
import yaml

from cellquery.errors import SpecError
from cellquery.files.listing import files_named
from cellquery.query.build import load_build
from cellquery.spec.query_spec import Problems


def loaded(paths):
    problems = Problems()
    specs = load_build(paths, problems)
    problems.raise_any()
    return specs


def spec_file(folder, stem, **fields):
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump({"name": stem, "organism": "human", **fields}))
    return path


def test_files_globs_and_directories_name_each_spec_once(tmp_path):
    a, b = spec_file(tmp_path, "a"), spec_file(tmp_path, "b")
    (tmp_path / "sub").mkdir()
    c = spec_file(tmp_path / "sub", "c")
    found = files_named([str(tmp_path), str(tmp_path / "*.yaml"), str(c)], tmp_path)
    assert found == [a, b, c]


def test_hidden_files_are_skipped_and_two_spellings_are_one_spec(tmp_path, monkeypatch):
    """Editor and OS droppings in a folder are skipped as a shell glob skips them; `./a.yaml`, `a.yaml` and
    its absolute path name one spec."""
    a = spec_file(tmp_path, "a")
    for dropping in (".#a.yaml", "._a.yaml"):
        (tmp_path / dropping).write_bytes(b"\x00\x05\x16\x07 not a spec")
    monkeypatch.chdir(tmp_path)
    assert files_named([str(tmp_path), "./a.yaml", "a.yaml", str(a)], tmp_path) == [a]


def test_a_file_named_with_glob_characters_is_itself(tmp_path):
    literal = spec_file(tmp_path, "kidney[v2]")
    spec_file(tmp_path, "kidneyv")  # what the name means as a glob pattern
    assert files_named([str(literal)], tmp_path) == [literal]


def test_a_fifo_is_refused_in_one_line_without_being_read(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError) as raised:
        loaded([fifo])
    assert raised.value.problems == [f"query: {str(fifo)!r} is a FIFO, not a spec file"]


def test_a_relative_entry_is_found_beside_the_workflow(tmp_path, monkeypatch):
    spec = spec_file(tmp_path, "a")
    monkeypatch.chdir(tmp_path.parent)
    assert files_named(["a.yaml"], tmp_path) == [spec]


def test_every_problem_of_every_spec_is_reported(tmp_path):
    paths = [
        spec_file(tmp_path, "good"),
        spec_file(tmp_path, "bad", organism="humann"),
        tmp_path / "none.yaml",
    ]
    with pytest.raises(SpecError) as raised:
        loaded(paths)
    problems = raised.value.problems
    assert len(problems) == 2 and any("bad.yaml: organism" in p for p in problems)
    assert any("no such file" in p for p in problems)


def test_one_name_twice_is_one_line_naming_both_files(tmp_path):
    first = spec_file(tmp_path, "same")
    second = tmp_path / "other.yaml"
    second.write_text(first.read_text())
    with pytest.raises(SpecError) as raised:
        loaded([first, second])
    assert raised.value.problems == [f"{second}: name 'same' is also the name of {first}"]


def test_one_output_key_twice_is_one_line_naming_both_files(tmp_path):
    first = spec_file(tmp_path, "one", output={"key": "cellquery/shared.h5ad"})
    second = spec_file(tmp_path, "two", output={"key": "cellquery/shared.h5ad"})
    with pytest.raises(SpecError) as raised:
        loaded([first, second])
    assert raised.value.problems == [
        f"{second}: output key 'cellquery/shared.h5ad' is also the output key of {first}"
    ]


def test_a_build_without_specs_says_so(tmp_path):
    with pytest.raises(SpecError, match="no query spec found"):
        loaded(files_named([str(tmp_path)], tmp_path))
