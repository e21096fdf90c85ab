"""The errors a user sees: each is one line on the terminal, `cellquery: <what and where>`.

Library code raises them; two boundaries turn them into the one-line exit: the spec check at parse time
(`rules/common.smk`, every problem of every spec) and the job wrapper (`cellquery.workflow.jobs.job_log`, the
job's one problem); the commands (`python -m cellquery`, `examples/train.py`) end in `one_line_exit`. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A problem the user can act on, told in one line naming the offending key, value, file or artifact."""

    def lines(self) -> str:
        """What the terminal shows: each line of the message after `cellquery: `."""
        return "\n".join(f"cellquery: {line}" for line in str(self).splitlines())


class SpecError(UserError, ValueError):
    """A bad query spec: one line per problem, each naming the key and the value."""

    def __init__(self, *problems: str):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def within(self, prefix: str) -> SpecError:
        """The same problems, each line prefixed (with the spec's file, say)."""
        return SpecError(*(f"{prefix}: {problem}" for problem in self.problems))


class SourceError(UserError, RuntimeError):
    """The instance, collection, census store or a stored file named by a spec cannot be used."""


class JoinKeyError(SourceError):
    """A dataset's `observation_joinid`, the key its cells are joined on across the two routes, is missing or
    repeated: one line per dataset, naming it and what is wrong."""


class FetchError(UserError, RuntimeError):
    """An artifact could not be fetched intact: one line naming it and the storage."""


class DiskFull(UserError):
    """A file could not be written for lack of space: one line naming it and its disk."""


class ValidationFailed(UserError):
    """The h5ad route and the census route disagree: the readable diff, and where the full report is."""


class ObjectServerError(UserError, RuntimeError):
    """The demo's object server cannot be started or reached."""


@contextmanager
def foreseen(source: str) -> Iterator[None]:
    """At the spec check's boundary, an error no check foresaw (a bug) still ends in one line naming
    `source` (the spec's file), so that no input makes a traceback reach the terminal before any job."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        raise SpecError(
            f"{source}: the spec check failed unexpectedly ({type(error).__name__}: {error}); "
            "this is a bug in cellquery, please report it with the spec"
        ) from error


@contextmanager
def one_line_exit() -> Iterator[None]:
    """A command's boundary: a `UserError` exits 1 with its one line on stderr."""
    try:
        yield
    except UserError as error:
        print(error.lines(), file=sys.stderr)
        raise SystemExit(1) from None
