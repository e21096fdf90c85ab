"""The CELLxGENE validators, `cellxgene-schema`, each run in an environment of its own.

A file is validated by the validator of its own schema (`uns/schema_version`): 7.1.2 for schema 7 files,
5.2.3 for the schema 5.2 files of Census 2025-01-30. Both pin an anndata older than the workflow's, so
neither is installed with cellquery: `make validator` creates `.venv-validator` and `.venv-validator-5` from
their lock files, and this module runs them there in a subprocess. The workflow never needs them (what it
reads of the validators, the gene references and the schema definition, ships in
`cellquery/cellxgene/reference/`); the tests and a curator checking a result do.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import h5py

CHECKOUT = Path(__file__).resolve().parents[2]
# Per schema major version: the variable naming a validator's environment, and its default (`make validator`).
VALIDATORS = {
    "7": ("CELLQUERY_VALIDATOR", CHECKOUT / ".venv-validator"),
    "5": ("CELLQUERY_VALIDATOR_5", CHECKOUT / ".venv-validator-5"),
}
NEWEST = "7"

# Runs in the validator's Python: every file in one process (loading its ontologies takes ~18 s).
PROGRAM = """
import json, sys
from cellxgene_schema.validate import validate

jobs, ignore_labels = json.loads(sys.argv[1]), sys.argv[2] == "1"
found = {}
for path, labelled in jobs:
    try:
        valid, errors, _ = validate(path, labelled, ignore_labels=ignore_labels)
    except SystemExit:  # what it does with a file h5py cannot open
        valid, errors = False, ["ERROR: the validator failed: it cannot open the file as an h5ad"]
    except Exception as error:  # it crashes on some files it cannot read, e.g. one with no cells
        valid, errors = False, [f"ERROR: the validator failed: {type(error).__name__}: {error}"]
    found[path] = [] if valid else [str(e) for e in errors]
with open(sys.argv[3], "w") as out:
    json.dump(found, out)
"""


class ValidatorMissing(RuntimeError):
    pass


def validator_env(schema: str = NEWEST) -> Path:
    """The environment of the validator of a schema major version: its variable, else this checkout's."""
    variable, default = VALIDATORS[schema]
    folder = Path(os.environ.get(variable) or default)
    if not (folder / "bin" / "cellxgene-schema").is_file():
        raise ValidatorMissing(
            f"no CELLxGENE validator of schema {schema} in {folder}: `make validator` installs it there "
            f"(or set {variable} to an environment holding cellxgene-schema)"
        )
    return folder


def validator_cli(schema: str = NEWEST) -> Path:
    """The `cellxgene-schema` command (`validate [-i] [--add-labels OUT] FILE`: exit 0 when valid)."""
    return validator_env(schema) / "bin" / "cellxgene-schema"


def schema_of(path: Path) -> str:
    """The schema major version a file states (`uns/schema_version`); the newest when it states none (a
    submission: the schema asked of it)."""
    with h5py.File(path, "r") as file:
        stated = file["uns"].get("schema_version") if "uns" in file else None
        version = stated[()].decode() if isinstance(stated, h5py.Dataset) else ""
    major = version.split(".", 1)[0]
    return major if major in VALIDATORS else NEWEST


def validate(
    paths: Iterable[str | Path],
    *,
    ignore_labels: bool = False,
    add_labels: Mapping[Path, Path] | None = None,
    schema: str | None = None,
) -> dict[Path, list[str]]:
    """The validator's errors for each h5ad, [] when valid, from one validator process per schema: each
    file's own (`schema_of`), or `schema` (a major version) for all. `add_labels` maps files to where the
    validator writes them with the portal's labels added (when valid)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():  # the validator would exit the process instead
            raise FileNotFoundError(path)
    labelled = {Path(k): str(v) for k, v in (add_labels or {}).items()}
    by_schema: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        by_schema[schema or _schema_or_newest(path)].append(path)
    found: dict[str, list[str]] = {}
    for schema, group in by_schema.items():
        found |= _run(schema, [(str(path), labelled.get(path)) for path in group], ignore_labels)
    return {path: found[str(path)] for path in paths}


def _schema_or_newest(path: Path) -> str:
    try:
        return schema_of(path)
    except OSError:  # no h5ad: the newest validator says what is wrong with it
        return NEWEST


def _run(schema: str, jobs: list[tuple[str, str | None]], ignore_labels: bool) -> dict[str, list[str]]:
    """One validator process for files of one schema."""
    python = validator_env(schema) / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="cellquery-validator-") as tmp:
        out = Path(tmp) / "errors.json"
        command = [str(python), "-c", PROGRAM, json.dumps(jobs), "1" if ignore_labels else "0", str(out)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        if run.returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"the validator of schema {schema} failed ({run.returncode}):\n{run.stderr[-4000:]}"
            )
        return json.loads(out.read_text())
