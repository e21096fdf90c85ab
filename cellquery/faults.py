"""Fault injection for the crash tests: `CELLQUERY_KILL_AT=<point>` kills the whole workflow at that point.

The job sends SIGKILL to its process group (Snakemake and every job of the run), as a scheduler killing the
run would; nothing is cleaned up. Unset, a failpoint does nothing.
"""

from __future__ import annotations

import os
import signal

POINTS = ("slice", "assemble", "register")


def failpoint(point: str) -> None:
    if os.environ.get("CELLQUERY_KILL_AT") == point:
        os.killpg(os.getpgid(0), signal.SIGKILL)
