"""The short summary a run ends with: what matched, what was built, where it is."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def result_summary(results: Path, spec_path: Path) -> str:
    """What a finished run of the spec at `spec_path` made, and how to see its report."""
    receipt = json.loads((results / "receipt.json").read_text())
    report = json.loads((results / "validation.json").read_text())
    query = json.loads((results / "query.json").read_text())
    totals = report["totals"]
    reused = " (identical content: existing version reused, now the latest)" if receipt["reused"] else ""
    collection = query["collection"]
    with_cells = sum(1 for d in report["per_dataset"] if d["h5ad_cells"])
    return "\n".join(
        [
            f"query {query['name']}  (spec digest {receipt['spec_digest']})",
            f"  datasets          {with_cells} with selected cells, of {len(report['per_dataset'])} matched "
            f"in {collection['key']} {collection['version']}",
            f"  cells             {receipt['n_obs']:,} (census route {totals['census_cells']:,} "
            f"after its inclusion rules)",
            f"  genes             {receipt['n_vars']:,}",
            f"  validation        {report['status']}: {totals['matched_cells']:,} cells and "
            f"{totals['genes_compared']:,} genes agree",
            f"  artifact          {receipt['artifact_uid']} version {receipt['version']} "
            f"key {receipt['key']}{reused}",
            f"  files             {results}/{query['name']}.h5ad, census.h5ad, validation.json, receipt.json",
            f"  report            make report QUERY={spec_path}  (snakemake --report {results}/report.html "
            f"--config query={spec_path})",
        ]
    )


def print_if_new(results: Path, spec_path: Path, since: float) -> None:
    """Print the summary when this run wrote the receipt (`make run` prints it itself, after any run)."""
    receipt = results / "receipt.json"
    if receipt.exists() and receipt.stat().st_mtime >= since:
        print(result_summary(results, spec_path), file=sys.stderr)
