"""The bad-spec corpus (tests/bad_specs/*.yaml, first line `# expect: <error>`), run by the real snakemake.

Every spec must stop before any job runs, with one line that names the key and the value, a non-zero exit,
the registry unchanged and nothing new under results/ or logs/.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import REPO, ask_target, snakemake, target_of

CORPUS = REPO / "tests" / "bad_specs"
MISSING = CORPUS / "no-such-spec.yaml"
HEAD = "name: {name}\norganism: human\n"
# Specs past the bounds of `cellquery.spec.limits`, too large to keep as files: (text, expected error)
GENERATED = {
    "file-too-large": (HEAD + "# padding\n" * 240_000, "more than a spec may (2 MiB)"),
    "list-too-long": (
        HEAD + "cells:\n  donor_id: [" + ", ".join(f"d{i}" for i in range(1_001)) + "]\n",
        "cells.donor_id: a list of more than 1,000 entries",
    ),
    "genes-too-many": (
        HEAD + "genes:\n" + "".join(f"- G{i}\n" for i in range(100_001)),
        "genes: a list of more than 100,000 entries",
    ),
    "text-too-long": (
        HEAD + f"artifacts:\n  description_contains: {'x' * 1_025}\n",
        "artifacts: line 4: a text of 1,025 characters",
    ),
}
CASES = {path.stem: path for path in sorted(CORPUS.glob("*.yaml"))} | {
    "missing-file": MISSING,
    **dict.fromkeys(GENERATED),
}
SNAKEMAKE_PREAMBLE = ("Using workflow specific profile", "Config file ")


def expected_error(path: Path) -> str:
    if path.stem in GENERATED:
        return GENERATED[path.stem][1]
    if not path.exists():
        return f"query: no such file '{path}'"
    return first_line(path).removeprefix("# expect: ")


def first_line(path: Path) -> str:
    return path.read_bytes().decode(errors="replace").splitlines()[0]


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> dict[str, Path]:
    """Every case's spec file, the generated ones written to a temporary folder."""
    folder = tmp_path_factory.mktemp("generated-specs")
    for name, (text, _) in GENERATED.items():
        (folder / f"{name}.yaml").write_text(text.format(name=name))
    return {name: path or folder / f"{name}.yaml" for name, path in CASES.items()}


def registry_counts(ln, demo) -> dict[str, int | None]:
    """Records of the source (this process' connection) and of the target, where one was made."""
    registries = ("Artifact", "Run", "Collection", "Transform")
    counts = {name: getattr(ln, name).objects.count() for name in registries}
    made = target_of(demo).receipt.exists()
    code = f"answer = {{name: getattr(ln, name).objects.count() for name in {registries!r}}}"
    return {**counts, "target": ask_target(demo, code) if made else None}


def files(project: Path) -> set[tuple[str, int]]:
    """Every file under results/ and logs/ with its modification time."""
    return {
        (str(p.relative_to(project)), p.stat().st_mtime_ns)
        for folder in ("results", "logs")
        for p in (project / folder).rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def outcomes(demo, ln, case_files, tmp_path_factory):
    """Run the whole corpus (two at a time: both cores), recording the registry and files around it."""
    before = registry_counts(ln, demo), files(demo.project)

    home = tmp_path_factory.mktemp("home")  # a remote instance is reached with the user's own ~/.lamin

    def run(path: Path):
        return snakemake(demo.project, "--config", f"query={path}", check=False, env={"HOME": str(home)})

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(case_files, pool.map(run, case_files.values()), strict=True))
    return results, before, (registry_counts(ln, demo), files(demo.project))


def test_the_corpus_covers_every_kind_of_bad_input():
    assert len(CASES) >= 40
    for path in CASES.values():
        assert path is None or not path.exists() or first_line(path).startswith("# expect: "), path


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec_stops_before_any_job_with_one_line(outcomes, case_files, case):
    result = outcomes[0][case]
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith(SNAKEMAKE_PREAMBLE)]
    assert len(lines) == 1, output
    assert lines[0].startswith("cellquery: ") and expected_error(case_files[case]) in lines[0], lines[0]
    assert "Building DAG" not in output and "rule " not in output  # no job was even planned


@pytest.mark.slow
def test_bad_specs_leave_the_registry_and_results_unchanged(outcomes):
    _, (counts_before, files_before), (counts_after, files_after) = outcomes
    assert counts_after == counts_before
    assert files_after == files_before


MANY_PROBLEMS = {
    "schema": (
        {
            "name": "many-typos",
            "organism": "humann",
            "cells": {"cell_type": {"descendant_of": "T cell"}, "tisue": "blood"},
            "obs_columns": ["cell_type", "raw_sum"],
            "output": {"gene_joint": "outer"},
        },
        [
            "cells.cell_type: unknown key 'descendant_of'; did you mean 'descendants_of'?",
            "output: unknown key 'gene_joint'; did you mean 'gene_join'?",
            "organism: unknown organism 'humann'; did you mean 'human'?",
            "cells.tisue: unknown obs column; did you mean 'tissue'?",
            "obs_columns: 'raw_sum' is a per-cell statistic only the census stores; query by it in cells:",
        ],
    ),
    "registry": (
        {
            "name": "many-unknown-names",
            "organism": "human",
            "cells": {"cell_type": ["T-cell", "neutrophl"], "tissue": "kidny"},
            "genes": ["CD3EE", "Cd4"],
            "artifacts": {"created_by": ["sunitja"]},
        },
        [
            "cells.cell_type: unknown name 'T-cell'; did you mean 'T cell' (CL:0000084)?",
            "cells.cell_type: unknown name 'neutrophl'; did you mean 'neutrophil' (CL:0000775)?",
            "cells.tissue: unknown name 'kidny'; did you mean 'kidney' (UBERON:0002113)?",
            "genes: unknown human gene 'CD3EE'; did you mean 'CD3E'?",
            "genes: 'Cd4' is a mouse gene symbol, not a human one; the human gene with that symbol is 'CD4'",
            "artifacts.created_by: unknown user 'sunitja'; did you mean 'sunitaj'?",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MANY_PROBLEMS))
def test_every_problem_of_a_spec_is_reported_in_one_run(demo, tmp_path, kind):
    spec, expected = MANY_PROBLEMS[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = snakemake(demo.project, "--config", f"query={path}", check=False)
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith(SNAKEMAKE_PREAMBLE)]
    assert result.returncode != 0 and "Building DAG" not in output
    assert sorted(lines) == sorted(f"cellquery: {path}: {problem}" for problem in expected), output
    assert not (demo.project / "results" / spec["name"]).exists()
