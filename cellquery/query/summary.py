"""The short summary a run ends with: what matched, what was built, where it is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cellquery.files.layout import QueryFiles
from cellquery.query.validate import unchecked


def _asked(query: dict) -> str:
    """` of N asked (...)` when the spec named genes and the result lacks some of them."""
    coverage = query.get("gene_coverage") or {}
    asked, kept = coverage.get("genes_asked"), coverage.get("in_every_dataset")
    if not asked or kept is None or (query["gene_join"] == "inner" and kept == asked):
        return ""
    partial = coverage.get("in_some_datasets", 0)
    lacking = f"{partial} measured by only some datasets" if query["gene_join"] == "inner" else ""
    absent = f"{len(coverage.get('in_no_dataset', []))} by none" if coverage.get("in_no_dataset") else ""
    why = "; ".join(part for part in (lacking, absent) if part)
    return f" of {asked:,} asked ({why}; see logs/{query['name']}/resolve.log)" if why else ""


def result_summary(files: QueryFiles, spec_path: Path) -> str:
    """What a finished run of the spec at `spec_path` made, and how to see its report."""
    receipt = json.loads(files.receipt.read_text())
    report = json.loads(files.validation.read_text())
    query = json.loads(files.query.read_text())
    totals = report["totals"]
    reused = " (identical content: existing version reused, now the latest)" if receipt["reused"] else ""
    collection = query["collection"]
    with_cells = sum(1 for d in report["per_dataset"] if d["h5ad_cells"])
    exported = [files.export(fmt) for fmt in receipt.get("exports", {})]
    sample = f", sampled {json.dumps(report['sample'])}" if "sample" in report else ""
    return "\n".join(
        [
            f"query {query['name']}  (spec digest {receipt['spec_digest']})",
            f"  datasets          {with_cells} with selected cells, of {len(report['per_dataset'])} matched "
            f"in {collection['key']} {collection['version']}",
            f"  cells             {receipt['n_obs']:,} (census route {totals['census_cells']:,} "
            f"after its inclusion rules{sample})",
            f"  genes             {receipt['n_vars']:,}{_asked(query)}",
            f"  validation        {report['status']}: {totals['matched_cells']:,} cells and "
            f"{totals['genes_compared']:,} genes agree{unchecked(totals)}",
            f"  artifact          {receipt['artifact_uid']} version {receipt['version']} "
            f"key {receipt['key']}{reused}",
            f"  files             {', '.join(map(str, [files.result, *exported]))}, census.h5ad, "
            "validation.json, receipt.json",
            f"  report            make report QUERY={spec_path}  (snakemake --report {files.dir}/report.html "
            f"--config query={spec_path})",
        ]
    )


def summary_line(files: QueryFiles) -> str:
    """One line per query of a build: cells, genes, validation, the registered version."""
    receipt = json.loads(files.receipt.read_text())
    status = json.loads(files.validation.read_text())["status"]
    return (
        f"{files.name}: {receipt['n_obs']:,} cells x {receipt['n_vars']:,} genes, validation {status}, "
        f"artifact {receipt['artifact_uid']} version {receipt['version']} ({files.result})"
    )


def print_new_summaries(specs: dict, since: float) -> None:
    """After a run, what it registered: the full summary of a single query, one line each for a build
    (`make run` prints them itself, after any run, with `python -m cellquery summary`)."""
    new = {name: spec for name, spec in specs.items() if _written_since(QueryFiles(name).receipt, since)}
    if len(specs) == 1 and new:
        ((name, spec),) = new.items()
        print(result_summary(QueryFiles(name), spec.path), file=sys.stderr)
    elif new:
        print("\n".join(summary_line(QueryFiles(name)) for name in new), file=sys.stderr)


def _written_since(path: Path, since: float) -> bool:
    return path.exists() and path.stat().st_mtime >= since
