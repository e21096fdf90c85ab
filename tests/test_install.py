"""`make install` on a machine whose pip configuration names local indexes: quiet, and a working venv; the
validator's environment beside it (`make validator`)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO


@pytest.mark.slow
def test_install_prints_no_warnings_and_gives_a_working_venv(tmp_path):
    venv, validator = tmp_path / "venv", tmp_path / "venv-validator"
    targets = ["install", "validator", f"VENV={venv}", f"VALIDATOR_VENV={validator}"]
    result = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", *targets],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr and "warning" not in result.stderr.lower(), result.stderr
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import cellquery, lamindb, snakemake"],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr
    checked = subprocess.run([str(validator / "bin" / "cellxgene-schema"), "--help"], capture_output=True)
    assert checked.returncode == 0, checked.stderr
