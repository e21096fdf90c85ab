"""`python -m cellquery summary|results|audit [QUERY.yaml]`: the last run of a query (default: of every query
of the build config/config.yaml names), or the instance its results go to;
`python -m cellquery provenance FILE`.

summary     what the last run of the query produced
results     the query's results directory (where `snakemake --report` writes report.html)
audit       the target instance: records without files, stored files without records, results without
            lineage (exit 1 if any)
provenance  where a result file (h5ad, zarr, obs Parquet; wherever it was copied) came from
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cellquery.build import spec_paths
from cellquery.errors import UserError, one_line_exit
from cellquery.layout import QueryFiles
from cellquery.spec import load_spec
from cellquery.summary import result_summary, summary_line

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"


def summary(queries: list[Path]) -> None:
    """The full summary of one query; of a build, one line per query."""
    files = {query: QueryFiles(load_spec(query).name) for query in queries}
    unfinished = [f"{query} (under {f.dir})" for query, f in files.items() if not f.receipt.exists()]
    if unfinished:
        raise UserError(f"no finished run of {', '.join(unfinished)}")
    if len(files) == 1:
        print(result_summary(*files.values(), queries[0]))
    else:
        print("\n".join(summary_line(f) for f in files.values()))


def audit(config: dict) -> None:
    from cellquery.audit import registry_problems
    from cellquery.target import Target

    problems = registry_problems(Target.from_config(config, Path.cwd()).connect())
    print("\n".join(problems) if problems else "registry whole: every record has its file and lineage")
    if problems:
        raise SystemExit(1)


def provenance(path: str | None) -> None:
    from cellquery.provenance import describe, read_provenance

    if not path or not Path(path).exists():
        raise UserError(f"provenance: no such file {path!r}: name a result (.h5ad, .zarr or .obs.parquet)")
    print(describe(read_provenance(path)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cellquery")
    parser.add_argument("command", choices=["summary", "results", "audit", "provenance"])
    parser.add_argument(
        "query", nargs="?", help="query spec (default: the build of config/config.yaml); provenance: a file"
    )
    args = parser.parse_args()
    if args.command == "provenance":
        return provenance(args.query)
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    queries = [Path(args.query)] if args.query else spec_paths(config["query"] or config["queries"], REPO)
    if args.command == "summary":
        summary(queries)
    elif args.command == "results":
        print("\n".join(str(QueryFiles(load_spec(query).name).dir) for query in queries))
    else:
        audit(config)


if __name__ == "__main__":
    with one_line_exit():
        main()
