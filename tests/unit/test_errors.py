"""The boundaries that turn a user's error into one line: the job wrapper and the commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

JOB = """
import sys
from cellquery.errors import FetchError
from cellquery.workflow.jobs import job_log
with job_log(sys.argv[1]):
    print("working")
    raise {error}
"""


def run_job(tmp_path, error: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "job.log"
    job = subprocess.run(
        [sys.executable, "-c", JOB.format(error=error), str(log)], capture_output=True, text=True
    )
    return job, log.read_text()


def test_a_user_error_ends_the_job_with_one_line_and_no_traceback(tmp_path):
    job, log = run_job(tmp_path, 'FetchError("artifact X (k.h5ad): the copy does not match")')
    assert job.returncode == 1
    assert job.stderr == "cellquery: artifact X (k.h5ad): the copy does not match\n"
    assert "working" in log and "job failed: artifact X" in log and "Traceback" not in log


def test_any_other_error_keeps_its_traceback_in_the_log(tmp_path):
    job, log = run_job(tmp_path, 'KeyError("obs")')
    assert job.returncode == 1 and "cellquery:" not in job.stderr
    assert "Traceback" in log and "KeyError: 'obs'" in log


def test_a_command_ends_a_user_error_with_one_line(capsys):
    from cellquery.errors import SourceError, one_line_exit

    with pytest.raises(SystemExit) as exit_, one_line_exit():
        raise SourceError("source.instance: the demo instance at /x is not built (run `make demo`)")
    assert exit_.value.code == 1
    assert (
        capsys.readouterr().err
        == "cellquery: source.instance: the demo instance at /x is not built (run `make demo`)\n"
    )


def test_every_line_of_a_many_line_error_gets_the_prefix(tmp_path):
    job, _ = run_job(tmp_path, 'FetchError("first problem\\nsecond problem")')
    assert job.stderr == "cellquery: first problem\ncellquery: second problem\n"


def test_the_spec_check_collects_any_user_error_and_goes_on():
    from cellquery.errors import SourceError, SpecError
    from cellquery.spec.query_spec import Problems

    problems = Problems()
    with problems.check():
        raise SourceError("a.yaml: source.instance: cannot connect to 'x/y'")
    with problems.check():
        raise SpecError("b.yaml: organism: unknown organism 'humann'")
    assert problems.found == [
        "a.yaml: source.instance: cannot connect to 'x/y'",
        "b.yaml: organism: unknown organism 'humann'",
    ]
