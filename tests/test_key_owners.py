"""A result belongs to its query: a spec copied from another, renamed, its output key left as it was, is
refused before any job in one line naming the query that owns the key and its spec file, unless it says it
continues it; the audit flags a key whose versions come from different queries (as an older cellquery let
happen). Through the real snakemake, on the session's demo and its embedded target."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import BIN, ask_target, registry_state, snakemake, spec_file

pytestmark = pytest.mark.slow  # every test runs the real snakemake

CELLS = {"tissue": "liver", "cell_type": "hepatocyte"}


def registered(demo, key: str) -> list[str]:
    found = f"answer = [a.version_tag for a in ln.Artifact.filter(key={key!r}).order_by('created_at')]"
    return ask_target(demo, found)


def test_a_spec_taking_over_another_querys_key_is_refused_unless_it_continues_it(demo, tmp_path):
    stamp = time.time_ns() % 10**8  # fresh names in a reused project too
    owner, copy = f"hepatocytes-{stamp}", f"hepatocytes-copy-{stamp}"
    key = f"cellquery/{owner}.h5ad"
    first = spec_file(tmp_path, owner, cells=CELLS, genes=["ALB", "APOA1"])
    snakemake(demo.project, "--config", f"query={first}")
    assert registered(demo, key) == ["1"]
    assert_summary_is_of_its_own_spec(demo, tmp_path, owner, first)

    taken = spec_file(tmp_path, copy, cells=CELLS, genes=["ALB", "TTR"], output={"key": key})
    refused = snakemake(demo.project, "--config", f"query={taken}", check=False)
    lines = [line for line in refused.stderr.splitlines() if line.startswith("cellquery:")]
    assert refused.returncode != 0 and len(lines) == 1, refused.stderr[-3000:]
    assert f"holds the results of query {owner!r} (spec {first.resolve()})" in lines[0]
    assert f"`continues: {owner}`" in lines[0] and "Building DAG" not in refused.stdout + refused.stderr
    assert registered(demo, key) == ["1"]

    continued = spec_file(
        tmp_path, copy, cells=CELLS, genes=["ALB", "TTR"], output={"key": key, "continues": owner}
    )
    snakemake(demo.project, "--config", f"query={continued}")
    assert registered(demo, key) == ["1", "2"]
    assert not [p for p in registry_state(demo, [key])["problems"] if key in p]


def test_the_audit_flags_a_key_whose_versions_come_from_different_queries(demo, tmp_path):
    stamp = time.time_ns() % 10**8
    name = f"liver-audit-{stamp}"
    key = f"cellquery/{name}.h5ad"
    for genes in (["ALB"], ["ALB", "HP"]):  # two versions of one query
        snakemake(demo.project, "--config", f"query={spec_file(tmp_path, name, cells=CELLS, genes=genes)}")
    retitled = (  # what an older cellquery let a copied spec do: the latest version another query's
        f"latest = ln.Artifact.filter(key={key!r}).order_by('-created_at').first()\n"
        "latest.features.remove_values('query_name')\n"
        "latest.features.add_values({'query_name': 'someone-else'})\n"
        "answer = latest.version_tag"
    )
    assert ask_target(demo, retitled) == "2"
    try:
        problems = [p for p in registry_state(demo, [key])["problems"] if key in p]
        assert problems == [
            f"result key {key}: version 2 is of query 'someone-else', the one before of {name!r}"
        ]
    finally:  # the project's registry whole again for the tests after this one, which audit all of it
        assert ask_target(demo, retitled.replace("'someone-else'", repr(name))) == "2"
    assert not [p for p in registry_state(demo, [key])["problems"] if key in p]


def assert_summary_is_of_its_own_spec(demo, tmp_path, name, built):
    """`summary` takes a folder as builds do, and never shows a run of another spec of the same name."""
    summary = [str(BIN / "python"), "-m", "cellquery", "summary"]
    shown = subprocess.run([*summary, str(built.parent)], capture_output=True, text=True, cwd=demo.project)
    assert shown.returncode == 0 and shown.stdout.startswith(f"query {name} "), shown.stderr
    edited = tmp_path / "edited" / built.name
    edited.parent.mkdir()
    edited.write_text(built.read_text().replace("APOA1", "TTR"))
    other = subprocess.run([*summary, str(edited)], capture_output=True, text=True, cwd=demo.project)
    assert other.returncode != 0 and "holds a run of another spec of that name" in other.stderr
