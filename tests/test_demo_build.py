"""The demo as the workflow builds it: valid CELLxGENE files, portal labels as the official tool writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import anndata as ad
import pandas as pd
import pytest
import tiledbsoma as soma
from conftest import REPO, TEST_HOME, clean_env, snakemake, start_snakemake, wait_until

from cellquery.cellxgene.validator import validate
from cellquery.demo import catalog
from cellquery.instances.demo_instance import DEMO_FORMAT
from cellquery.store.experiment import LABELLED_TERMS

LABEL_COLUMNS = list(LABELLED_TERMS)
VAR_LABELS = ["feature_name", "feature_reference", "feature_biotype", "feature_length", "feature_type"]
PORTAL_UNS = ["organism", "schema_version", "schema_reference", "citation"]


def generated_files(demo):
    return sorted((demo.root / "h5ad").glob("shard-*/*.h5ad"))


def test_every_dataset_is_generated(demo):
    assert {p.stem for p in generated_files(demo)} == set(catalog.by_stem("small"))


def test_every_dataset_passes_the_official_validator(demo):
    found = validate(generated_files(demo), ignore_labels=True)
    assert {path.stem: errors for path, errors in found.items() if errors} == {}


def to_submission_format(portal: ad.AnnData) -> ad.AnnData:
    """Strip what the portal adds, leaving the file a submitter would upload."""
    submission = portal.copy()
    labels = [*LABEL_COLUMNS, *(["organism"] if "organism" in portal.obs else [])]  # schema 5: per cell
    submission.obs = submission.obs.drop(columns=[*labels, "observation_joinid"])
    submission.var = submission.var.drop(columns=VAR_LABELS)
    raw = ad.AnnData(
        X=portal.raw.X, obs=pd.DataFrame(index=portal.obs_names), var=portal.raw.var.drop(columns=VAR_LABELS)
    )
    submission.raw = raw
    for key in PORTAL_UNS:
        submission.uns.pop(key, None)
    return submission


@pytest.mark.parametrize(
    "stem",
    [
        "hs-lung-smartseq2-r1",  # spike-ins
        "hs-lung-atlas-r1",  # primary cell culture
        "hs-lung-atlas-r1-schema5",  # cell culture (schema 5.2)
        "hs-mm-xenograft-r1-schema5",  # cells of two organisms (schema 5.2)
        "hs-brain-comorbid-r1",  # joined diseases (schema 7)
        "cj-brain-r1",  # marmoset, UBERON life stages
    ],
)
def test_portal_labels_equal_the_official_label_writer(demo, tmp_path, stem):
    """Our labels are exactly what `--add-labels` of the file's own schema writes."""
    (ours,) = [p for p in generated_files(demo) if p.stem == stem]
    portal = ad.read_h5ad(ours)
    submission = tmp_path / "submission.h5ad"
    to_submission_format(portal).write_h5ad(submission)
    labelled = {submission: tmp_path / "labelled.h5ad"}
    schema = portal.uns["schema_version"].split(".")[0]  # a submission states none: the schema asked
    errors = validate([submission], add_labels=labelled, schema=schema)[submission]
    assert errors == []
    official = ad.read_h5ad(tmp_path / "labelled.h5ad")
    per_cell = ["organism"] if "organism" in portal.obs else []
    for column in [*LABEL_COLUMNS, *per_cell, "observation_joinid"]:
        assert (official.obs[column].astype(str) == portal.obs[column].astype(str)).all(), column
    for column in VAR_LABELS:
        assert (official.var[column].astype(str) == portal.var[column].astype(str)).all(), column
        assert (official.raw.var[column].astype(str) == portal.raw.var[column].astype(str)).all(), column
    assert official.uns.get("organism") == portal.uns.get("organism")
    # the label writer states its own version (7.1.0 for our 7.0.0 files, as the builder of 2025-11-08 wants)
    assert official.uns["schema_version"].split(".")[0] == portal.uns["schema_version"].split(".")[0]


def test_each_release_store_is_made_by_the_atlas_version_step_at_its_files_generation(demo):
    """The demo's stores come from the step that makes an atlas version's; the newer release's files are of
    another schema generation, so its store is built anew, not made from the older one's."""
    logs = demo.project / "logs" / "demo" / "small"
    newer = (logs / f"census-{catalog.V2}.log").read_text()
    assert "cellquery.ingest.store" in newer
    older = "Census schema 2.1.0 (dataset schema 5.2.0)"
    assert f"census {catalog.V1} is {older}, this version Census schema 2.4.0" in newer
    assert "built anew" in newer and "datasets reused" not in newer
    stated = {}
    for version in (catalog.V1, catalog.V2):
        with soma.open(str(demo.storage / "cell-census" / version / "soma")) as census:
            table = census["census_info"]["datasets"].read().concat().to_pandas()
        stated[version] = dict(zip(table["dataset_id"], table["dataset_version_id"], strict=True))
    # each dataset's version as the portal's citation in its file names it
    assert stated == {
        version: {spec.dataset_id: spec.dataset_version_id for spec in catalog.release("small", version)}
        for version in (catalog.V1, catalog.V2)
    }


def test_second_build_does_nothing(demo):
    result = snakemake(demo.project, "demo", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_build_logs_every_rule(demo):
    logs = demo.project / "logs" / "demo" / "small"
    assert (logs / "instance.log").stat().st_size > 0
    older, newer = ((logs / f"register-{v}.log").read_text() for v in (catalog.V1, catalog.V2))
    # each release registered by the step that registers an atlas's version (cellquery.ingest.version)
    assert f"release {catalog.V2}: 18 h5ads in the storage" in newer
    assert "cellquery.ingest.version" in newer
    assert f"release {catalog.V1}: 14 datasets, 14 added or replaced, 2 without labels" in older
    assert f"release {catalog.V2}: 18 datasets, 18 added or replaced, 3 without labels" in newer
    assert "cells" in (logs / f"census-{catalog.V1}.log").read_text()


def test_make_env_points_a_shell_at_the_demo(demo):
    script = (
        f'eval "$(make -s -C {REPO} env PROJECT={demo.project})"; '
        'python -c "import lamindb as ln; '
        "print(ln.Artifact.filter(key__startswith='cell-census/', suffix='.h5ad').count())\""
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=clean_env(), cwd=demo.project
    )
    assert result.returncode == 0, result.stderr
    releases = (catalog.V1, catalog.V2)
    assert result.stdout.strip().splitlines()[-1] == str(
        sum(len(catalog.release("small", v)) for v in releases)
    )


def test_the_demo_never_touches_the_users_lamin_settings(demo):
    assert (demo.root / "settings" / ".lamin").is_dir()
    assert not (TEST_HOME / ".lamin").exists()


@pytest.mark.parametrize("built", [None, DEMO_FORMAT - 1])
def test_a_demo_of_another_format_is_refused_in_one_line_before_any_job(tmp_path, built):
    """A demo an older cellquery built (its summary without this format) would count as built: Snakemake does
    not rebuild a target that exists. Refused, with what to do; nothing is run or removed."""
    root = tmp_path / ".demo" / "small"
    root.mkdir(parents=True)
    summary = {"instance": "older"} | ({} if built is None else {"demo_format": built})
    (root / "summary.json").write_text(json.dumps(summary))
    found = snakemake(tmp_path, "demo", check=False)
    lines = [line for line in found.stderr.splitlines() if line.startswith("cellquery:")]
    assert found.returncode != 0 and len(lines) == 1, found.stderr[-2000:]
    assert f"{root} was built by another cellquery" in lines[0] and f"rm -rf {root}" in lines[0]
    assert sorted(p.name for p in root.iterdir()) == ["summary.json"]


def test_a_demo_made_from_another_seed_is_refused_in_one_line_before_any_job(tmp_path):
    """A changed `demo_seed` regenerated the files into the existing demo: two seeds' datasets in one
    instance, identical results registered again. Refused, with both ways out; nothing is run or removed."""
    root = tmp_path / ".demo" / "small"
    root.mkdir(parents=True)
    (root / "instance.json").write_text(json.dumps({"slug": "anonymous/cellquery-demo-small", "seed": 0}))
    found = snakemake(tmp_path, "demo", "--config", "demo_seed=7", check=False)
    lines = [line for line in found.stderr.splitlines() if line.startswith("cellquery:")]
    assert found.returncode == 1 and lines == [
        f"cellquery: config: demo_seed: 7, but the demo at {root} was made with seed 0: set demo_seed: 0, "
        f"or remove the demo (rm -rf {root}) and the next run makes it with seed 7"
    ], found.stderr[-2000:]
    assert sorted(p.name for p in root.iterdir()) == ["instance.json"]


def test_the_built_demo_records_its_format(demo):
    assert json.loads(demo.summary.read_text())["demo_format"] == DEMO_FORMAT


@pytest.mark.slow
def test_a_census_rebuild_killed_midway_leaves_a_demo_the_next_run_completes(demo, ln):
    """A census store rebuild killed mid-way deleted the store and its record before building the new one
    (lamindb deleting the other release's record with it), and left the demo marked built: every later run's
    spec check needed the missing stores, `make run` could not repair it. Now both stores stay registered
    and in use until the new one is complete, and the demo is unmarked while a step changes it: the spec
    check lets the shipped queries through and the next run plans the rebuild. The demo is then put back as
    it was (a completed rebuild would give the store a new identity under the results of earlier tests)."""
    from cellquery.ingest.store import CENSUS_KEY

    receipt = demo.root / "census" / f"{catalog.V2}.json"
    kept = {path: path.read_bytes() for path in (receipt, demo.summary)}
    log = demo.project / "logs" / "demo" / "small" / f"census-{catalog.V2}.log"
    log.unlink(missing_ok=True)
    run = start_snakemake(demo.project, "demo", "--forcerun", str(receipt.relative_to(demo.project)))
    try:
        wait_until(lambda: log.exists() and "cells" in log.read_text(), run, "the new store was begun")
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        assert not demo.summary.exists()  # unmarked: no spec check reads the demo as whole
        for version in (catalog.V1, catalog.V2):  # both stores still registered, still there
            key = CENSUS_KEY.format(version=version)
            assert ln.Artifact.filter(key=key).count() == 1 and (demo.storage / key / "census_data").is_dir()
        assert snakemake(demo.project, "--dry-run").returncode == 0  # the shipped queries pass their check
        planned = snakemake(demo.project, "demo", "--dry-run")
        assert "rule demo_census:" in planned.stdout + planned.stderr
        assert "rule demo_summary:" in planned.stdout + planned.stderr
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        for path, content in kept.items():
            path.write_bytes(content)
        # the killed job's mark on its output, where Snakemake had written one (checked: nothing to do after)
        snakemake(demo.project, "--cleanup-metadata", str(receipt.relative_to(demo.project)), check=False)
        shutil.rmtree(demo.root / "census-staging", ignore_errors=True)
    again = snakemake(demo.project, "demo", "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
