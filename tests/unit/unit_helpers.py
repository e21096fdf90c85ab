"""What several fast-tier tests share: a real LaminDB instance in a temporary directory, in a process of its
own (one instance per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# The start of a script run by `in_temporary_instance`: `ln` connected to a new instance under sys.argv[1]
TEMPORARY_INSTANCE = """
import contextlib, sys
from pathlib import Path

from cellquery.lamin import DemoInstance, connect, use_demo_settings

root = Path(sys.argv[1])
demo = DemoInstance(root, "small")
use_demo_settings(demo, fresh=True)
demo.root.mkdir(parents=True)
import lamindb_setup

with contextlib.chdir(demo.root):
    lamindb_setup.init(storage=str(demo.storage), name=demo.name)
ln = connect(demo.env())
"""


def in_temporary_instance(script: str, folder: Path):
    """Run `script` (which starts with `TEMPORARY_INSTANCE`) with an instance under `folder`; what its last
    line printed, as JSON."""
    run = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
