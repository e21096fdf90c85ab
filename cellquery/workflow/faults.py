"""Fault injection for the crash tests: `CELLQUERY_KILL_AT=<point>` kills the whole workflow at that point.

The job sends a signal to its process group (Snakemake and every job of the run), as a scheduler ending the
run would: SIGKILL by default (nothing is cleaned up), or the one `CELLQUERY_KILL_SIGNAL` names (`TERM`: what
SLURM sends at a time limit). Unset, a failpoint does nothing.
"""

from __future__ import annotations

import os
import signal

POINTS = ("slice", "assemble", "register")  # where the SIGKILL tests kill
STAGES = (
    "resolve",
    "slice",
    "census",
    "assemble",
    "export",
    "register",
    "describe",
)  # the query's failpoints
INGEST_POINTS = ("ingest-register", "ingest-store")  # one dataset registered; a store staged, not in place


def failpoint(point: str) -> None:
    if os.environ.get("CELLQUERY_KILL_AT") == point:
        name = os.environ.get("CELLQUERY_KILL_SIGNAL", "KILL")
        os.killpg(os.getpgid(0), signal.Signals[f"SIG{name}"])
