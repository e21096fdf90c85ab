"""The workflow's configuration (`config/config.yaml` and `--config`), checked as a spec is: one line per
problem naming its key (an unknown key with a suggestion), non-finite and oversized numbers refused; then the
schema's defaults filled in."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from cellquery.errors import SpecError
from cellquery.spec.query_spec import document_problems

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEFAULT_CONFIG = CONFIG_DIR / "config.yaml"
CONFIG_SCHEMA = CONFIG_DIR / "schemas" / "config.schema.yaml"


@cache
def config_schema() -> dict:
    return yaml.safe_load(CONFIG_SCHEMA.read_text())


def check_config(config: dict) -> None:
    """Refuse a bad configuration in one line per problem (`config: KEY: ...`); fill in the defaults of the
    keys it leaves out, in place (Snakemake's `config`)."""
    problems = document_problems(config, config_schema())
    if problems:
        raise SpecError(*(f"config: {line.removeprefix('(top level): ')}" for line in problems))
    for key, entry in config_schema()["properties"].items():
        if "default" in entry:
            config.setdefault(key, entry["default"])
