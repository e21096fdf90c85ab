"""The short summary a run ends with: what matched, what was built, where it is."""

from __future__ import annotations

import json
from pathlib import Path


def result_summary(results: Path, spec_path: Path) -> str:
    """What a finished run of the spec at `spec_path` made, and how to see its report."""
    receipt = json.loads((results / "receipt.json").read_text())
    report = json.loads((results / "validation.json").read_text())
    query = json.loads((results / "query.json").read_text())
    totals = report["totals"]
    reused = " (identical content: existing version reused)" if receipt["reused"] else ""
    collection = query["collection"]
    return "\n".join(
        [
            f"query {query['name']}  (spec digest {receipt['spec_digest']})",
            f"  datasets matched  {len(report['per_dataset'])} in {collection['key']} "
            f"{collection['version']}",
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
