"""The CELLxGENE validator, `cellxgene-schema`, run in an environment of its own.

cellxgene-schema 7.1.2 pins anndata 0.11.4, older than the workflow's, so it is not installed with cellquery:
`make validator` creates `.venv-validator` from `requirements-validator.lock`, and this module runs it there
in a subprocess. The workflow never needs it (what it reads of the validator, the gene references and the
schema definition, ships in `cellquery/reference/`); the tests and a curator checking a result do.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

VALIDATOR_ENV = "CELLQUERY_VALIDATOR"  # the validator's environment (a folder with bin/cellxgene-schema)
DEFAULT_ENV = Path(__file__).resolve().parents[1] / ".venv-validator"  # `make validator`

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


def validator_env() -> Path:
    """The validator's environment: $CELLQUERY_VALIDATOR, else this checkout's `.venv-validator`."""
    folder = Path(os.environ.get(VALIDATOR_ENV) or DEFAULT_ENV)
    if not (folder / "bin" / "cellxgene-schema").is_file():
        raise ValidatorMissing(
            f"no CELLxGENE validator in {folder}: `make validator` installs it there "
            f"(or set {VALIDATOR_ENV} to an environment holding cellxgene-schema)"
        )
    return folder


def validator_cli() -> Path:
    """The `cellxgene-schema` command (`validate [-i] [--add-labels OUT] FILE`: exit 0 when valid)."""
    return validator_env() / "bin" / "cellxgene-schema"


def validate(
    paths: Iterable[str | Path], *, ignore_labels: bool = False, add_labels: Mapping[Path, Path] | None = None
) -> dict[Path, list[str]]:
    """The validator's errors for each h5ad, [] when valid, from one validator process. `add_labels` maps
    files to where the validator writes them with the portal's labels added (when valid)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():  # the validator would exit the process instead
            raise FileNotFoundError(path)
    labelled = {Path(k): str(v) for k, v in (add_labels or {}).items()}
    jobs = [(str(path), labelled.get(path)) for path in paths]
    python = validator_env() / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="cellquery-validator-") as tmp:
        out = Path(tmp) / "errors.json"
        command = [str(python), "-c", PROGRAM, json.dumps(jobs), "1" if ignore_labels else "0", str(out)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        if run.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the validator failed ({run.returncode}):\n{run.stderr[-4000:]}")
        found = json.loads(out.read_text())
    return {path: found[str(path)] for path in paths}
