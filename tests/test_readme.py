"""What the README and the documents beside it tell a user to type works in the project's environment, and
their links lead somewhere."""

from __future__ import annotations

import re

from conftest import REPO

DOCUMENTS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README = "\n".join(path.read_text() for path in DOCUMENTS)


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


def anchors(path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    headings = re.findall(r"(?m)^#+ (.+)$", path.read_text())
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_links_between_the_documents_lead_to_a_file_and_heading():
    broken = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if target.startswith("http"):
                continue
            file, _, anchor = target.partition("#")
            path = (document.parent / file).resolve() if file else document
            if not path.exists() or (anchor and anchor not in anchors(path)):
                broken.append(f"{document.relative_to(REPO)}: {target}")
    assert not broken
