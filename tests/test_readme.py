"""What the README tells a user to type works in the project's environment."""

from __future__ import annotations

import re

from conftest import REPO

README = (REPO / "README.md").read_text()


def shell_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_shell_snippets_run_the_venvs_python():
    assert shell_lines()
    bare = [line for line in shell_lines() if re.match(r"(python3?|pip|snakemake)\b", line)]
    assert not bare, f"the venv's programs (.venv/bin/...) hold cellquery and lamindb: {bare}"
    assert not re.search(r"(?<![/\w.-])python -m cellquery", README)


def test_view_lineage_says_what_it_needs():
    paragraph = next(p for p in README.split("\n\n") if "view_lineage()" in p)
    assert "graphviz" in paragraph and "artifact_<uid>.gv" in paragraph
