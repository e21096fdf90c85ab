"""What every Snakemake job shares: its log file receives stdout, stderr and timestamped progress."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import resource
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from cellquery.errors import UserError
from cellquery.files.locks import lock_holders
from cellquery.instances.lamin import locked_database

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STARTUP_LINE = "start-up: %.2f s (%.2f s CPU) from process start to first work"  # read by `make bench` (B10)
_started_work = False


STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # a scheduler's time limit or a cancelled run; Ctrl-C


class Terminated(BaseException):
    """A stopping signal reached the job (its name the argument). Raised like KeyboardInterrupt, not as an
    `Exception`: no retry loop swallows it, and every `finally:` and `with` on the way out runs
    (temporaries removed, files closed, the registry transaction rolled back)."""


def _terminate(signum: int, frame) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextlib.contextmanager
def job_log(path: str | Path) -> Iterator[None]:
    """Send this job's output (lamindb prints to stdout) and `logging` progress to `path`; a `UserError`
    ends the job with its one line on the terminal (and in the log), SIGTERM or SIGINT (Ctrl-C) with one
    line too, any other error with its traceback; a job that succeeds ends its process at once
    (`_exit_now`)."""
    job = f"{Path(path).parent.name}/{Path(path).stem}"
    previous = {signum: signal.signal(signum, _terminate) for signum in STOPPING_SIGNALS}
    failure = None
    try:
        with _holding_jobs_lock(), _logged_to(path):
            try:
                yield
            except UserError as error:
                failure = str(error)  # the text only: what the failed step held is freed below, while logged
            except Terminated as stopped:
                failure = f"job {job} stopped by {stopped}, nothing half-written kept; run again"
            except Exception as error:
                if (failure := locked_database(error)) is None:
                    raise
            if failure is not None:
                gc.collect()
                logging.getLogger("cellquery").error("job failed: %s", failure)
                echo(UserError(failure).lines())
                raise SystemExit(1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _exit_now()


def _exit_now() -> None:
    """End a finished job's process without Python's teardown, which frees every module imported (a few
    tenths of a second of CPU once anndata and tiledbsoma are in): every file is closed by now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def _logged_to(path: str | Path) -> Iterator[None]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        # an error ignored while freeing an object (an h5py file on a full disk, say) comes through both
        # hooks (Cython prints its traceback with the first): one line in the log, no traceback (the log
        # of a failed job reaches the terminal)
        sys.excepthook, sys.unraisablehook = _no_traceback, _log_ignored
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        except SystemExit:
            raise
        except BaseException:
            logging.getLogger("cellquery").exception("job failed")
            raise
        finally:
            sys.excepthook, sys.unraisablehook = sys.__excepthook__, sys.__unraisablehook__
            root.removeHandler(handler)


def _no_traceback(*error) -> None:
    """Within a job, errors reach sys.excepthook only from C extensions printing what they ignore."""


def _log_ignored(unraisable) -> None:
    message = str(unraisable.exc_value).splitlines()[0]
    logging.getLogger("cellquery").warning("%s (ignored while freeing memory)", message)


def at_work() -> None:
    """Log, once per process, how long it took to get here from process start (interpreter, imports,
    unpickling the job, connecting): call where a job begins its own work."""
    global _started_work
    age = process_age()
    if not _started_work and age is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        logging.getLogger("cellquery").info(STARTUP_LINE, age, usage.ru_utime + usage.ru_stime)
    _started_work = True


def process_age() -> float | None:
    """Seconds since this process started (from Linux's /proc; None elsewhere)."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return None
    return uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks


def echo(message: str) -> None:
    """Print to the terminal running Snakemake, even while stdout goes to the job's log."""
    print(message, file=sys.__stderr__, flush=True)


JOBS_LOCK = Path(".snakemake") / "cellquery-jobs.lock"  # held shared by every running job (`job_log`)


def claim_workdir(snakemake_dir: Path) -> TextIO:
    """Hold a lock on the working directory for this process's life (the kernel drops it if the process dies).

    Whoever gets it knows no other cellquery run is active here, so Snakemake locks still present were left
    by a killed run: they are removed and the run goes on, instead of stopping with "Directory cannot be
    locked" (unless jobs of that run are still at work: one line, and nothing starts). Keep the returned
    handle open.
    """
    snakemake_dir.mkdir(exist_ok=True)
    handle = open(snakemake_dir / "cellquery-run.lock", "a")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return handle  # another run is active: its locks are real
    if orphans := _jobs_at_work(snakemake_dir / JOBS_LOCK.name):
        handle.close()
        pids = ", ".join(map(str, orphans))
        raise UserError(
            f"jobs of a run that was killed are still at work here (processes {pids}): wait until they end, "
            "or stop them, then run again"
        )
    locks = snakemake_dir / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        shutil.rmtree(locks)
        echo("cellquery: removed the Snakemake locks a killed run left behind")
    return handle


def _jobs_at_work(path: Path) -> list[int]:
    """The processes holding the jobs' lock (no run holds the run lock: they outlived theirs), [] if none."""
    with open(path, "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock_holders(path) or ["(unknown)"]
        fcntl.flock(probe, fcntl.LOCK_UN)
    return []


@contextlib.contextmanager
def _holding_jobs_lock() -> Iterator[None]:
    """This job's share of the jobs' lock, while it works (a job run outside a workflow directory holds
    none)."""
    if not JOBS_LOCK.parent.is_dir():
        yield
        return
    with open(JOBS_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        yield
