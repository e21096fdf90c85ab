"""One's own atlas (`snakemake ingest`): a folder of files as labs have them (symbols, counts in a layer or
as whole floats in X, label names, no ontology ids) ingested into two versions of an atlas, the second adding
two datasets and replacing one; queried with the shipped specs and checked against the files themselves."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import pytest
import yaml
from conftest import PG_SERVER, REPO, lab_file, postgresql_missing, require_service, snakemake
from test_pipeline import check_result, expected_cells, seed_guide_selection

from cellquery.cellxgene import ontology
from cellquery.demo import catalog, synth
from cellquery.workflow.faults import INGEST_POINTS

pytestmark = pytest.mark.slow

NAME = "lab"
V1, V2 = "2026-11-01", "2026-12-01"
CELLS = 400  # per file
REPLACED = "hs-blood-pbmc-r1"  # its second version keeps its first 300 cells


def counts_as_whole_floats(lab):
    lab.X = lab.layers.pop("counts")
    return lab


def first_cells(lab):
    return lab[:300].copy()


FILES = {  # version -> dataset -> how the lab changed the portal's file
    V1: {"hs-kidney-immune-r2": None, REPLACED: counts_as_whole_floats},
    V2: {"hs-spleen-immune-r1": counts_as_whole_floats, "hs-brain-microglia-r1": None, REPLACED: first_cells},
}


def ingest(project: Path, versions: list[str], *config: str, check: bool = True, env: dict | None = None):
    """`snakemake ingest` of the lab's files of these versions, with more `config` items; `--keep-going`."""
    spec = {"name": NAME, "versions": {v: [f"lab/{v}/"] for v in versions}}
    (project / "atlas.yaml").write_text(yaml.safe_dump(spec))
    command = ["ingest", "--keep-going", "--config", "atlas=atlas.yaml", *config]
    return snakemake(project, *command, check=check, env=env)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """The atlas after each version's ingest: what the second one ran, and the first store's files."""
    project = tmp_path_factory.mktemp("atlas-project")
    portal = project / "portal"
    portal.mkdir()
    specs = {spec.file_stem: spec for spec in catalog.release("small", catalog.V2)}
    for version, changes in FILES.items():
        (project / "lab" / version).mkdir(parents=True)
        for stem, change in changes.items():
            source = portal / f"{stem}.h5ad"
            if not source.exists():
                synth.write_dataset(replace(specs[stem], n_cells=CELLS), 0, source)
            lab_file(source, project / "lab" / version, change, name=f"{stem}.h5ad")
    root = project / ".cellquery" / "atlas" / NAME
    ingest(project, [V1])
    first_store = {p: p.stat().st_mtime_ns for p in (root / "storage" / f"cell-census/{V1}/soma").rglob("*")}
    second = ingest(project, [V1, V2])
    return SimpleNamespace(project=project, root=root, portal=portal, second=second, first_store=first_store)


def lab_copy(atlas, project: Path, versions: list[str]) -> None:
    """The lab's files of these versions in another project, with the submissions the fixture's ingest made
    of them (its validator runs are not repeated: `ingest` finds them made)."""
    for version in versions:
        shutil.copytree(atlas.project / "lab" / version, project / "lab" / version)
        submissions = Path(".cellquery") / "atlas" / NAME / "submissions" / version
        shutil.copytree(atlas.project / submissions, project / submissions)


def ask_atlas(atlas, code: str, name: str = NAME):
    """`answer` computed by `code` connected to the atlas `name` (read-only), in a process of its own."""
    import subprocess
    import sys

    program = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from cellquery.instances.atlas_instance import AtlasInstance\n"
        "from cellquery.instances.lamin import connect\n"
        f"ln = connect(AtlasInstance.of(Path({str(atlas.project)!r}), {name!r}).env(), read_only=True)\n"
        f"{code}\n"
        "print(json.dumps(answer))\n"
    )
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_version_adds_datasets_and_replaces_one(atlas):
    state = ask_atlas(
        atlas,
        "def members(version):\n"
        "    c = ln.Collection.get(key='cellxgene-census', version_tag=version)\n"
        "    return {Path(a.key).stem: a.uid for a in c.ordered_artifacts.all()}\n"
        f"replaced = ln.Artifact.filter(key='h5ads/{REPLACED}.h5ad').order_by('created_at')\n"
        "answer = {'v1': members('%s'), 'v2': members('%s'),\n"
        "          'versions': [[a.uid, a.is_latest] for a in replaced],\n"
        "          'labels': sorted(c.name for c in ln.Artifact.get(key='h5ads/hs-kidney-immune-r2.h5ad')"
        ".cell_types.all())}" % (V1, V2),
    )
    assert set(state["v1"]) == set(FILES[V1]) and set(state["v2"]) == set(FILES[V1]) | set(FILES[V2])
    kidney = "hs-kidney-immune-r2"
    assert state["v2"][kidney] == state["v1"][kidney]  # kept as it was: the same artifact
    (old, old_latest), (new, new_latest) = state["versions"]
    assert state["v1"][REPLACED] == old and state["v2"][REPLACED] == new and new_latest and not old_latest
    assert state["labels"]  # registered with the labels the public instance carries
    submitted = {p.stem for p in (atlas.root / "submissions" / V2).glob("*.h5ad")}
    assert submitted == set(FILES[V2])  # only the new files were read and standardized
    assert "ingest_submission" in atlas.second.stderr and f"submissions/{V1}/" not in atlas.second.stderr


def test_the_second_store_is_made_from_the_first(atlas):
    """Only the added and replaced datasets' cells written; the first version's store as it was, its files
    shared by the second's (hard links) but for the replaced dataset's."""
    census = json.loads((atlas.root / "census" / f"{V2}.json").read_text())
    assert census["reused"] == ["hs-kidney-immune-r2"] and census["dropped"] == [REPLACED]
    assert sorted(census["added"]) == sorted(FILES[V2])
    log = (atlas.root / "logs" / f"census-{V2}.log").read_text()
    assert "hs-kidney-immune-r2:" not in log and f"dropped {REPLACED}" in log  # the kept one: not read
    first = atlas.root / "storage" / f"cell-census/{V1}/soma"
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == atlas.first_store
    second = atlas.root / "storage" / f"cell-census/{V2}/soma"
    kept = json.loads((second / "fragments.json").read_text())["homo_sapiens"]["hs-kidney-immune-r2"]
    experiment = Path("census_data") / "homo_sapiens"
    files = [
        file.relative_to(second)
        for array, names in kept["fragments"].items()
        for name in names
        for file in (
            second / experiment / ("" if array == "obs" else "ms/RNA") / array / "__fragments" / name
        ).iterdir()
    ]
    assert files and all((second / f).stat().st_ino == (first / f).stat().st_ino for f in files)


def test_the_validator_accepts_the_atlas_datasets(atlas):
    from cellquery.cellxgene.validator import validate

    submissions = sorted(atlas.root.glob("submissions/*/*.h5ad"))
    assert len(submissions) == len(FILES[V1]) + len(FILES[V2])
    # as the portal serves them: with the labels the validator added
    assert validate(submissions, ignore_labels=True) == {path: [] for path in submissions}


def test_get_anndata_reads_the_store(atlas):
    import cellxgene_census

    store = atlas.root / "storage" / f"cell-census/{V2}/soma"
    with cellxgene_census.open_soma(uri=str(store)) as census:
        kidney = cellxgene_census.get_anndata(
            census, "Homo sapiens", obs_value_filter="tissue_general == 'kidney'"
        )
    assert kidney.n_obs == CELLS and set(kidney.obs["dataset_id"]) == {"hs-kidney-immune-r2"}
    assert (
        kidney.X.sum()
        == ad.read_h5ad(atlas.project / "lab" / V1 / "hs-kidney-immune-r2.h5ad").layers["counts"].sum()
    )


def portal_cells(atlas, select, datasets: dict | None = None) -> dict[str, ad.AnnData]:
    """Per dataset of the latest version (or of `datasets`, each with its version), the cells `select(obs)`
    picks in the files the lab's came from (the replaced dataset: the cells its newer file kept), keyed by the
    join ids the validator gave them."""
    latest = datasets or {stem: version for version in FILES for stem in FILES[version]}
    picked = {}
    for stem, version in latest.items():
        lab = ad.read_h5ad(atlas.project / "lab" / version / f"{stem}.h5ad", backed="r")
        source = ad.read_h5ad(atlas.portal / f"{stem}.h5ad")[lab.obs_names].copy()
        submitted = ad.read_h5ad(atlas.root / "submissions" / version / f"{stem}.h5ad", backed="r").obs
        source.obs["observation_joinid"] = (
            submitted["observation_joinid"].reindex(source.obs_names).to_numpy()
        )
        mask = select(source.obs).to_numpy()
        if mask.any():
            picked[stem] = source[mask]
    return picked


def run_shipped(atlas, name: str, atlas_name: str = NAME, renamed: str | None = None) -> None:
    """A shipped spec over the atlas (the latest version of its `cellxgene-census`), `renamed` if given."""
    snakemake(atlas.project, "--config", f"query={_shipped_spec(atlas, name, atlas_name, renamed)}")


def _shipped_spec(atlas, name: str, atlas_name: str = NAME, renamed: str | None = None) -> Path:
    spec = yaml.safe_load((REPO / "config" / "queries" / f"{name}.yaml").read_text())
    spec["source"] = {"instance": f"atlas:{atlas_name}"}
    spec["name"] = renamed or spec["name"]
    spec.setdefault("output", {})["key"] = f"atlas/{spec['name']}.h5ad"
    path = atlas.project / "queries" / f"{spec['name']}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_kidney_query_over_the_atlas_equals_the_files(atlas):
    run_shipped(atlas, "kidney-immune")
    expected = portal_cells(
        atlas, seed_guide_selection(["dendritic cell", "neutrophil"], "kidney", "10x 3' v2")
    )
    check_result(atlas.project, "kidney-immune", expected)


def test_the_brain_query_over_the_atlas_equals_the_files(atlas):
    run_shipped(atlas, "brain-microglia")
    expected = portal_cells(atlas, seed_guide_selection(["microglial cell", "neuron"], "brain", "10x 3' v3"))
    check_result(atlas.project, "brain-microglia", expected)


def test_the_t_cell_query_over_the_atlas_equals_the_files(atlas):
    run_shipped(atlas, "t-cells")
    cl = ontology.ontology("CL")
    t_cells = {t for t, term in cl.items() if t == catalog.T_CELL or catalog.T_CELL in term["ancestors"]}
    expected = portal_cells(
        atlas,
        lambda obs: (
            obs["cell_type_ontology_term_id"].isin(t_cells)
            & obs["tissue"].isin(["blood", "spleen"])
            & (obs["disease"] != "COVID-19")
            & obs["is_primary_data"]
        ),
    )
    assert {"hs-spleen-immune-r1", REPLACED} <= set(expected)
    check_result(atlas.project, "t-cells", expected, genes=None)


def test_messy_files_are_refused_one_line_each_and_nothing_registered(atlas, tmp_path):
    project = tmp_path
    folder = project / "lab" / V1
    folder.mkdir(parents=True)
    portal = atlas.portal / "hs-kidney-immune-r2.h5ad"
    (folder / "notes.h5ad").write_text("cell,type\n")
    (folder / "empty.h5ad").write_bytes(b"")

    def repeated_ids(lab):
        lab.obs_names = ["cell-1"] * 2 + list(lab.obs_names[2:])
        return lab

    def normalized_only(lab):
        del lab.layers["counts"]
        return lab

    lab_file(portal, folder, repeated_ids, name="repeated.h5ad")
    lab_file(portal, folder, normalized_only, name="normalized.h5ad")
    run = ingest(project, [V1], check=False)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("cellquery: ")]
    for name, problem in [
        ("notes.h5ad", "not an h5ad (not an HDF5 file)"),
        ("empty.h5ad", "not an h5ad (an empty file)"),
        ("repeated.h5ad", "cell id given to more than one cell"),
        ("normalized.h5ad", "is no count"),
    ]:
        assert [line for line in lines if line.startswith(f"cellquery: {name}: ") and problem in line], name
    root = project / ".cellquery" / "atlas" / NAME
    assert not (root / "versions").exists() and not (root / "storage").exists()
    assert not list(root.glob("submissions/*/*.h5ad"))


def atlas_state(project: Path) -> dict:
    """What an atlas holds: each collection version's datasets (by file hash), every artifact's key, and
    each store's cells."""
    atlas = SimpleNamespace(project=project)
    return ask_atlas(
        atlas,
        "versions = {c.version_tag: sorted((Path(a.key).stem, a.hash) for a in c.ordered_artifacts.all())\n"
        "            for c in ln.Collection.filter(key='cellxgene-census')}\n"
        "artifacts = sorted([a.key, a.version_tag or ''] for a in ln.Artifact.filter())\n"
        "stores = {a.key: a.n_observations for a in ln.Artifact.filter(otype='tiledbsoma')}\n"
        "answer = {'versions': versions, 'artifacts': artifacts, 'stores': stores}",
    )


def test_a_killed_ingest_reruns_to_the_same_atlas(atlas, tmp_path):
    """Killed with one dataset registered and no collection yet, then (that rerun) with the store staged and
    not in place: the next ingest ends where an ingest never killed ends (the fixture's first version)."""
    lab_copy(atlas, tmp_path, [V1])
    for point in INGEST_POINTS:
        killed = ingest(tmp_path, [V1], check=False, env={"CELLQUERY_KILL_AT": point})
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert not (tmp_path / ".cellquery" / "atlas" / NAME / "summary.json").exists()
    ingest(tmp_path, [V1])
    clean = atlas_state(atlas.project)
    clean["versions"].pop(V2)
    clean["stores"].pop(f"cell-census/{V2}/soma")
    rerun = atlas_state(tmp_path)
    assert rerun["versions"] == clean["versions"] and rerun["stores"] == clean["stores"]
    data = [key for key, _ in rerun["artifacts"] if key.startswith(("h5ads/", "cell-census/"))]
    assert sorted(data) == sorted([*(f"h5ads/{d}.h5ad" for d in FILES[V1]), f"cell-census/{V1}/soma"])


def test_an_atlas_on_postgresql_and_in_object_storage_is_queried_as_one_on_disk(
    atlas, tmp_path, object_server_root
):
    """Both versions ingested on a PostgreSQL database of the atlas's own, its h5ads and stores in an S3
    location (recorded: later runs need not name them), the second store's files it shares with the first
    copied within the storage, not uploaded; the kidney query over it (with the bucket's credentials, as a
    lab's private bucket needs): the same cells as over the files."""
    from cellquery.storage.objectstore import ObjectServer
    from cellquery.storage.settings import filesystem

    require_service(postgresql_missing())
    server = ObjectServer.at(object_server_root).ensure_running()
    credentials = server.uploader_env()
    data_root = f"s3://lab-atlas/atlases/{NAME}?endpoint_url={server.endpoint}"
    bucket = filesystem(
        data_root,
        {"s3": {"key": credentials["AWS_ACCESS_KEY_ID"], "secret": credentials["AWS_SECRET_ACCESS_KEY"]}},
    )
    bucket.mkdir("lab-atlas")
    lab_copy(atlas, tmp_path, list(FILES))
    url = f"{PG_SERVER}/cellquery_atlas_{uuid.uuid4().hex[:8]}"
    run = ingest(tmp_path, [V1, V2], f"atlas_db_url={url}", f"atlas_storage={data_root}", env=credentials)
    assert "rule ingest_submission" not in run.stderr  # the fixture's submissions, as they were
    root = tmp_path / ".cellquery" / "atlas" / NAME
    made = json.loads((root / "instance.json").read_text())
    assert made["db"].startswith("postgresql://") and made["db"].endswith(url.rsplit("/", 1)[1])
    assert made["data_root"] == data_root and not list((root / "storage").rglob("*.h5ad"))
    in_bucket = bucket.find("lab-atlas/atlases")
    assert len([key for key in in_bucket if key.endswith(".h5ad")]) == len(FILES[V1]) + len(FILES[V2])
    log = (root / "logs" / f"census-{V2}.log").read_text()
    assert re.search(r"files uploaded, [1-9][0-9]* copied within the storage", log)

    project = SimpleNamespace(project=tmp_path, root=root, portal=atlas.portal)
    path = _shipped_spec(project, "kidney-immune")
    snakemake(tmp_path, "--config", f"query={path}", env=credentials)
    expected = portal_cells(
        project, seed_guide_selection(["dendritic cell", "neutrophil"], "kidney", "10x 3' v2")
    )
    check_result(tmp_path, "kidney-immune", expected)
    for key, other in [("atlas_db_url", f"{url}_other"), ("atlas_storage", "s3://another-bucket")]:
        refused = ingest(tmp_path, [V1, V2], f"{key}={other}", check=False, env=credentials)
        assert f"cellquery: config: {key}: the atlas {NAME} was made on " in refused.stderr


def test_datasets_of_another_instance_are_recorded_zero_copy(demo, ln):
    """An atlas of the demo's kidney datasets, one in its first version and two more in its second, recorded
    zero-copy (the demo's uids, hashes and files; no h5ad in the atlas's storage); the shipped kidney spec
    over it selects the cells the same spec selects in those datasets of the demo."""
    ids = {s.file_stem: s.dataset_id for s in catalog.release("small", catalog.V2)}
    first, *more = (
        ids[stem] for stem in ("hs-kidney-immune-r2", "hs-kidney-immune-2-r1", "hs-kidney-3v4-r1")
    )
    spec = {
        "name": "kidney-public",
        "versions": {
            V1: [{"instance": "demo", "version": catalog.V2, "datasets": [first]}],
            V2: [{"instance": "demo", "datasets": more}],  # its latest collection version
        },
    }
    (demo.project / "kidney-public.yaml").write_text(yaml.safe_dump(spec))
    snakemake(demo.project, "ingest", "--config", "atlas=kidney-public.yaml")
    root = demo.project / ".cellquery" / "atlas" / "kidney-public"
    assert not list((root / "storage").rglob("*.h5ad"))  # zero-copy: no file copied
    recorded = ask_atlas(
        SimpleNamespace(project=demo.project),
        f"c = ln.Collection.get(key='cellxgene-census', version_tag={V2!r})\n"
        "answer = sorted([a.uid, a.hash, str(a.path), a.cell_types.count() > 0] for a in c.artifacts.all())",
        name="kidney-public",
    )
    keys = [f"cell-census/{catalog.V2}/h5ads/{i}.h5ad" for i in (first, *more)]
    held = sorted([a.uid, a.hash, str(a.path), True] for a in ln.Artifact.filter(key__in=keys))
    assert recorded == held and len(held) == 3  # annotated by the curator, too

    run_shipped(
        SimpleNamespace(project=demo.project), "kidney-immune", "kidney-public", "kidney-public-immune"
    )
    selection = seed_guide_selection(["dendritic cell", "neutrophil"], "kidney", "10x 3' v2")
    expected = {
        dataset: cells
        for dataset, cells in expected_cells(ln, catalog.V2, catalog.HUMAN, selection).items()
        if dataset in (first, *more)
    }
    assert first in expected
    check_result(demo.project, "kidney-public-immune", expected)


def test_datasets_another_instance_lacks_or_holds_in_an_older_schema_are_refused(demo):
    """A dataset of an older schema, a mistyped dataset id and a collection version the source lacks: one
    line each, nothing registered."""
    ids = {s.file_stem: s.dataset_id for s in catalog.release("small", catalog.V2)}
    kidney = ids["hs-kidney-immune-r2"]  # in both releases: the older of schema 5
    spec = {
        "name": "refused",
        "versions": {
            V1: [{"instance": "demo", "version": catalog.V1, "datasets": [kidney]}],
            V2: [{"instance": "demo", "datasets": [kidney[:-1]]}],
            "2027-01-01": [{"instance": "demo", "version": "2025-11-09", "datasets": [kidney]}],
        },
    }
    (demo.project / "refused.yaml").write_text(yaml.safe_dump(spec))
    run = snakemake(demo.project, "ingest", "--keep-going", "--config", "atlas=refused.yaml", check=False)
    lines = [line for line in run.stderr.splitlines() if line.startswith("cellquery: ")]
    older = f"cellquery: datasets: {kidney} of demo {catalog.V1} is of CELLxGENE schema 5.2.0; an atlas holds"
    assert [line for line in lines if line.startswith(older)]
    assert (
        f"cellquery: datasets: demo {catalog.V2} holds no dataset {kidney[:-1]!r}; did you mean {kidney!r}?"
        in lines
    )
    unknown = (
        "cellquery: demo: version: collection 'cellxgene-census' has no version '2025-11-09'; did you mean"
    )
    assert [line for line in lines if line.startswith(unknown)]
    assert not (demo.project / ".cellquery" / "atlas" / "refused" / "versions").exists()
