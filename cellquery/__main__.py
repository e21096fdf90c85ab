"""`python -m cellquery summary|results|audit [QUERY.yaml]`: the last run of a query (default: of every query
of the build config/config.yaml names), or the instance its results go to;
`python -m cellquery provenance FILE`; `python -m cellquery releases|values COLUMN [options] [COLUMN=VALUE
...]`: what the source instance holds (run in the project directory).

summary     what the last run of the query produced
results     the query's results directory (where `snakemake --report` writes report.html)
audit       the target instance: records without files, stored files without records, results without
            lineage (exit 1 if any)
provenance  where a result file (h5ad, zarr, obs Parquet; wherever it was copied) came from
releases    the collection versions of the source: datasets, cells, census store
values      each value of an obs column with its cells and datasets (--organism, --version, --instance,
            --demo-storage; criteria as COLUMN=VALUE, a YAML value: cell_type='[T cell, B cell]')
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from cellquery.errors import UserError, one_line_exit
from cellquery.files.layout import QueryFiles
from cellquery.files.listing import files_named
from cellquery.query.summary import result_summary, summary_line
from cellquery.spec.configuration import DEFAULT_CONFIG
from cellquery.spec.query_spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def summary(queries: list[Path]) -> None:
    """The full summary of one query; of a build, one line per query."""
    specs = {query: load_spec(query) for query in queries}
    files = {query: QueryFiles(spec.name) for query, spec in specs.items()}
    unfinished = [f"{query} (under {f.dir})" for query, f in files.items() if not f.receipt.exists()]
    if unfinished:
        raise UserError(f"no finished run of {', '.join(unfinished)}")
    others = [
        f"{query} ({f.dir} holds a run of another spec of that name)"
        for query, f in files.items()
        if json.loads(f.receipt.read_text())["spec_digest"] != specs[query].digest
    ]
    if others:
        raise UserError(f"no finished run of {', '.join(others)}")
    if len(files) == 1:
        print(result_summary(*files.values(), queries[0]))
    else:
        print("\n".join(summary_line(f) for f in files.values()))


def audit(config: dict) -> None:
    from cellquery.instances.target import Target
    from cellquery.query.audit import registry_problems

    problems = registry_problems(Target.from_config(config, Path.cwd()).connect())
    print("\n".join(problems) if problems else "registry whole: every record has its file and lineage")
    if problems:
        raise SystemExit(1)


def provenance(path: str | None) -> None:
    from cellquery.outputs.provenance import describe, read_provenance

    if not path or not Path(path).exists():
        raise UserError(f"provenance: no such file {path!r}: name a result (.h5ad, .zarr or .obs.parquet)")
    story = read_provenance(path)
    if not story:
        raise UserError(f"provenance: {path} holds no cellquery provenance: it is no cellquery result")
    print(describe(story))


def explore(args, config: dict) -> None:
    """`releases` and `values`: what the source instance of this project holds."""
    from cellquery.instances.demo_instance import DemoInstance
    from cellquery.instances.source import Source
    from cellquery.query import explore

    storage = args.demo_storage or config["demo_storage"]
    demo = DemoInstance(Path.cwd(), config["demo_scale"], config["demo_db_url"] or None, storage)
    source = Source(args.instance, demo)
    if args.command == "releases":
        print("\n".join(explore.releases(source)))
        return
    if not args.query:
        raise UserError(
            "values: name an obs column (e.g. python -m cellquery values cell_type tissue=kidney)"
        )
    spec = explore.question(args.organism, args.version, args.instance, args.criteria)
    print("\n".join(explore.values(spec, source, args.query)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cellquery")
    parser.add_argument(
        "command", choices=["summary", "results", "audit", "provenance", "releases", "values"]
    )
    parser.add_argument(
        "query",
        nargs="?",
        help="query spec (default: the build of config/config.yaml); provenance: a file; values: a column",
    )
    parser.add_argument("criteria", nargs="*", help="values: COLUMN=VALUE criteria, as a spec's cells")
    parser.add_argument("--organism", default="human", help="values: the organism (default human)")
    parser.add_argument("--version", help="values: the collection version (default the latest)")
    parser.add_argument("--instance", default="demo", help="releases, values: the source (default demo)")
    parser.add_argument(
        "--demo-storage", choices=["local", "s3"], help="releases, values: the demo's (default: the config's)"
    )
    args = parser.parse_intermixed_args()
    if args.command == "provenance":
        return provenance(args.query)
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if args.command in ("releases", "values"):
        return explore(args, config)
    entries = [args.query] if args.query else config["query"] or config["queries"]
    queries = files_named(entries, Path.cwd() if args.query else REPO)
    if args.command == "summary":
        summary(queries)
    elif args.command == "results":
        print("\n".join(str(QueryFiles(load_spec(query).name).dir) for query in queries))
    else:
        audit(config)


if __name__ == "__main__":
    with one_line_exit():
        main()
