"""`python -m cellquery summary [QUERY.yaml]`: the summary of a query's last run."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cellquery.spec import load_spec
from cellquery.summary import result_summary

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cellquery")
    parser.add_argument("command", choices=["summary"])
    parser.add_argument("query", nargs="?", help="query spec (default: the one config/config.yaml names)")
    args = parser.parse_args()
    query = args.query or yaml.safe_load(DEFAULT_CONFIG.read_text())["query"]
    results = Path("results") / load_spec(query).name
    if not (results / "receipt.json").exists():
        raise SystemExit(f"no finished run of {query} under {results}")
    print(result_summary(results))


if __name__ == "__main__":
    main()
