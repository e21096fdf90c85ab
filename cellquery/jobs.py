"""What every Snakemake job shares: its log file receives stdout, stderr and timestamped progress."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def job_log(path: str | Path | None) -> Iterator[None]:
    """Send this job's output (lamindb prints to stdout) and `logging` progress to `path`."""
    if path is None:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        except BaseException:
            logging.getLogger("cellquery").exception("job failed")
            raise
        finally:
            root.removeHandler(handler)


def echo(message: str) -> None:
    """Print to the terminal running Snakemake, even while stdout goes to the job's log."""
    print(message, file=sys.__stderr__, flush=True)
