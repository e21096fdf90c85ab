"""`python -m cellquery summary|results|audit [QUERY.yaml]`: a query's last run, or the instance it queries.

summary  what the last run of the query produced
results  the query's results directory (where `snakemake --report` writes report.html)
audit    records without files, stored files without records, results without lineage (exit 1 if any)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cellquery.spec import load_spec
from cellquery.summary import result_summary

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def results_dir(query: str) -> Path:
    return Path("results") / load_spec(query).name


def summary(query: str) -> None:
    results = results_dir(query)
    if not (results / "receipt.json").exists():
        raise SystemExit(f"no finished run of {query} under {results}")
    print(result_summary(results, Path(query)))


def audit(query: str, config: dict) -> None:
    from cellquery.audit import registry_problems
    from cellquery.lamin import DemoInstance
    from cellquery.registry import connect_source

    demo = DemoInstance(Path.cwd(), config["demo_scale"], config.get("demo_db_url") or None)
    problems = registry_problems(connect_source(load_spec(query), demo))
    print("\n".join(problems) if problems else "registry whole: every record has its file and lineage")
    if problems:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cellquery")
    parser.add_argument("command", choices=["summary", "results", "audit"])
    parser.add_argument("query", nargs="?", help="query spec (default: the one config/config.yaml names)")
    args = parser.parse_args()
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    query = args.query or config["query"]
    if args.command == "summary":
        summary(query)
    elif args.command == "results":
        print(results_dir(query))
    else:
        audit(query, config)


if __name__ == "__main__":
    main()
