"""What several fast-tier tests share: a real LaminDB instance in a temporary directory, in a process of its
own (one instance per process); a tiny human dataset sliced as the shard job slices it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# The start of a script run by `in_temporary_instance`: `ln` connected to a new instance under sys.argv[1]
TEMPORARY_INSTANCE = """
import sys
from pathlib import Path

from cellquery.instances.lamin import LocalInstance

root = Path(sys.argv[1])
ln = LocalInstance(root / "instance", "scratch").create(modules=None)
"""


def in_temporary_instance(script: str, folder: Path):
    """Run `script` (which starts with `TEMPORARY_INSTANCE`) with an instance under `folder`; what its last
    line printed, as JSON."""
    run = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


HUMAN = "NCBITaxon:9606"


def sliced_tiny(path, dataset_id: str, out: Path, criteria=(), obs_columns=("cell_type",), **options) -> dict:
    """`slice_dataset` on a tiny human h5ad, by the newest release's rules; returns its counts."""
    from cellquery.cellxgene.release import releases
    from cellquery.query.slicing import slice_dataset

    return slice_dataset(
        path,
        list(criteria),
        dataset_id=dataset_id,
        organism=HUMAN,
        release=releases()[-1],
        obs_columns=list(obs_columns),
        gene_ids=None,
        out=out,
        **options,
    )
