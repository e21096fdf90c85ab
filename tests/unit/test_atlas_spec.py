"""Atlas specs (`cellquery.ingest.atlas_spec`): each version's datasets, from files or from another instance,
a later one replacing an earlier one of the same name; a bad spec refused one line per problem."""

from __future__ import annotations

import pytest
import yaml

from cellquery.errors import SpecError
from cellquery.ingest.atlas_spec import Imported, load_atlas_spec


def spec_at(tmp_path, spec: dict):
    path = tmp_path / "atlas.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_atlas_spec(path, tmp_path)


def refusal(tmp_path, spec: dict) -> list[str]:
    with pytest.raises(SpecError) as raised:
        spec_at(tmp_path, spec)
    return [problem.removeprefix(f"{tmp_path / 'atlas.yaml'}: ") for problem in raised.value.problems]


@pytest.fixture
def lab(tmp_path):
    for name in ("batch-1/a.h5ad", "batch-1/b.h5ad", "batch-2/b.h5ad", "batch-2/c.h5ad"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_versions_add_files_and_datasets_of_another_instance(lab):
    spec = spec_at(
        lab,
        {
            "name": "kidney-lab",
            "versions": {
                "2026-11-01": ["batch-1/"],
                "2026-12-01": [
                    "batch-2/*.h5ad",
                    {"instance": "laminlabs/cellxgene", "version": "2025-01-30", "datasets": ["d-1"]},
                    {"instance": "demo", "datasets": ["d-2"]},
                ],
            },
        },
    )
    assert spec.files("2026-11-01") == {"a": lab / "batch-1/a.h5ad", "b": lab / "batch-1/b.h5ad"}
    assert spec.files("2026-12-01") == {"b": lab / "batch-2/b.h5ad", "c": lab / "batch-2/c.h5ad"}
    public = Imported("laminlabs/cellxgene", "2025-01-30")
    assert spec.imports("2026-12-01") == {"d-1": public, "d-2": Imported("demo", None)}
    assert spec.import_sources("2026-12-01") == {
        "laminlabs--cellxgene": "laminlabs/cellxgene",
        "demo": "demo",
    }
    assert spec.imports("2026-12-01", "demo") == {"d-2": Imported("demo", None)}
    # b's second file replaces its first; a is kept from the first version
    assert spec.members("2026-12-01") == {
        "a": "2026-11-01",
        "b": "2026-12-01",
        "c": "2026-12-01",
        "d-1": "2026-12-01",
        "d-2": "2026-12-01",
    }
    assert spec.plan("2026-12-01")["previous"] == "2026-11-01" and spec.previous("2026-11-01") is None


def test_a_bad_spec_is_refused_one_line_per_problem(lab):
    problems = refusal(
        lab,
        {
            "name": "kidney lab",
            "owner": "me",
            "versions": {
                "2026-11-01": ["batch-3/"],
                "2026-12-01": [{"instance": "cellxgene", "datasets": "d-1", "collection": "x"}],
                "2027-01-01": [{"instance": "atlas:kidney-lab", "datasets": ["d-1"]}],
            },
        },
    )
    assert problems == [
        "owner: unknown key (an atlas spec has name, versions)",
        "name: 'kidney lab' is no atlas name (letters, digits, '.', '_' or '-', up to 64)",
        "versions: 2026-11-01: 'batch-3/' names no h5ad file",
        "versions: 2026-12-01: collection: unknown key "
        "(datasets of another instance: instance, version, datasets)",
        "versions: 2026-12-01: instance: 'cellxgene' is no instance (demo, atlas:<name> or owner/name)",
        "versions: 2026-12-01: datasets: give the dataset ids to record, e.g. datasets: [<id>, ...]",
    ]
    own = {"instance": "atlas:kidney-lab", "datasets": ["d"]}
    itself = refusal(lab, {"name": "kidney-lab", "versions": {"2026-11-01": [own]}})
    assert itself == [
        "versions: 2026-11-01: instance: 'atlas:kidney-lab' is this atlas: give another instance"
    ]


def test_one_dataset_from_two_places_in_a_version_is_refused(lab):
    entries = ["batch-1/b.h5ad", {"instance": "demo", "datasets": ["b"]}]
    problems = refusal(lab, {"name": "kidney-lab", "versions": {"2026-11-01": entries}})
    assert problems == [
        f"versions: 2026-11-01: dataset 'b' given twice: {lab / 'batch-1/b.h5ad'} and "
        "demo (its latest version)"
    ]
