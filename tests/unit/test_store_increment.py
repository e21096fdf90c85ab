"""A version's store made from the previous version's (`cellquery.store.increment`): the same cells, values,
var counts, presence and tables as a store built anew from the same h5ads; the previous store's files left as
they were and shared (hard links), and only the new datasets' cells written."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import anndata as ad
import cellxgene_census
import numpy as np
import pandas as pd
import pytest
import tiledbsoma as soma

from cellquery.cellxgene.release import release_named
from cellquery.demo import catalog, synth
from cellquery.store.build import FRAGMENTS, build_census
from cellquery.store.increment import extend_census
from cellquery.store.sources import SourceDataset

ORGANISMS = {"homo_sapiens": "Homo sapiens", "mus_musculus": "Mus musculus"}


@pytest.fixture(scope="module")
def versions(tiny_h5ads, tmp_path_factory):
    """Version 1: datasets a and b. Version 2: a kept, b replaced by a file of its first 250 cells, c (a
    mouse dataset: a new experiment) added; built from version 1's store and anew."""
    folder = tmp_path_factory.mktemp("increment")
    (a, a_path), (b, b_path) = tiny_h5ads
    b_newer = folder / f"{b}.h5ad"
    ad.read_h5ad(b_path)[:250].copy().write_h5ad(b_newer)
    mouse = next(s for s in catalog.release("small", catalog.V2) if s.organism == catalog.MOUSE)
    c_path = folder / f"{mouse.file_stem}.h5ad"
    synth.write_dataset(replace(mouse, n_cells=300), 0, c_path)
    first = [source(a, a_path, "1"), source(b, b_path, "1")]
    second = [source(a, a_path, "1"), source(b, b_newer, "2"), source(mouse.dataset_id, c_path, "1")]
    release = release_named(catalog.V2)
    v1 = folder / "v1"
    build_census(first, v1, "v1", release)
    files_before = file_states(v1)
    extended = extend_census(v1, second, folder / "v2", "v2", release)
    build_census(second, folder / "anew", "v2", release)
    return {
        "v1": v1,
        "before": files_before,
        "v2": folder / "v2",
        "anew": folder / "anew",
        "summary": extended,
    }


def source(dataset_id, path, version):
    return SourceDataset(
        dataset_id=dataset_id, dataset_version_id=f"{dataset_id}-v{version}", title="", path=path
    )


def file_states(folder):
    return {
        p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()
    }


def cells(uri, organism: str, layer: str) -> ad.AnnData:
    """An experiment's cells by (dataset, join id), genes by feature id, both sorted."""
    with cellxgene_census.open_soma(uri=str(uri)) as census:
        adata = cellxgene_census.get_anndata(census, organism, X_name=layer)
    adata.obs_names = adata.obs["dataset_id"].astype(str) + ":" + adata.obs["observation_joinid"].astype(str)
    adata.var_names = adata.var["feature_id"].astype(str)
    return adata[np.argsort(adata.obs_names), np.argsort(adata.var_names)]


@pytest.mark.parametrize("layer", ["raw", "normalized"])
@pytest.mark.parametrize("name", sorted(ORGANISMS))
def test_the_extended_store_holds_what_a_new_build_holds(versions, name, layer):
    extended, anew = (
        cells(versions["v2"], ORGANISMS[name], layer),
        cells(versions["anew"], ORGANISMS[name], layer),
    )
    assert list(extended.obs_names) == list(anew.obs_names) and extended.n_obs > 0
    genes = anew.var_names  # the extended store keeps the genes only a dropped dataset measured, unmeasured
    assert (extended[:, genes].X != anew.X).nnz == 0
    assert (extended[:, extended.var_names.difference(genes)].X.nnz) == 0
    columns = ["cell_type", "is_primary_data", "raw_sum", "nnz", "n_measured_vars"]
    pd.testing.assert_frame_equal(extended.obs[columns].astype(str), anew.obs[columns].astype(str))
    var = extended.var.set_index("feature_id")
    fresh = anew.var.set_index("feature_id")
    assert (var.loc[genes, ["nnz", "n_measured_obs"]] == fresh[["nnz", "n_measured_obs"]]).all().all()
    assert (var.drop(index=genes)[["nnz", "n_measured_obs"]] == 0).all().all()


def presence(uri, name: str) -> dict[str, set[str]]:
    """Each dataset's measured genes, by dataset and feature id."""
    with soma.open(str(uri)) as root:
        datasets = root["census_info"]["datasets"].read().concat().to_pandas().set_index("soma_joinid")
        rna = root["census_data"][name].ms["RNA"]
        genes = rna.var.read().concat().to_pandas().set_index("soma_joinid")["feature_id"]
        matrix = rna["feature_dataset_presence_matrix"].read().tables().concat().to_pandas()
    measured: dict[str, set[str]] = {}
    for row, col in zip(matrix["soma_dim_0"], matrix["soma_dim_1"], strict=True):
        measured.setdefault(datasets.loc[row, "dataset_id"], set()).add(genes[col])
    return measured


@pytest.mark.parametrize("name", sorted(ORGANISMS))
def test_presence_and_the_datasets_table_agree_with_a_new_build(versions, name):
    assert presence(versions["v2"], name) == presence(versions["anew"], name)
    tables = []
    for store in ("v2", "anew"):
        with soma.open(str(versions[store] / "census_info" / "datasets")) as frame:
            table = frame.read().concat().to_pandas()
        tables.append(
            table.set_index("dataset_id")[["dataset_version_id", "dataset_total_cell_count"]].sort_index()
        )
    pd.testing.assert_frame_equal(*tables)


def test_the_previous_store_is_untouched_and_shared(versions):
    assert file_states(versions["v1"]) == versions["before"]  # not a byte or timestamp changed
    summary = versions["summary"]
    kept, replaced = summary["reused"], summary["dropped"]
    assert len(kept) == len(replaced) == 1 and len(summary["added"]) == 2 and replaced[0] in summary["added"]
    book = json.loads((versions["v2"] / FRAGMENTS).read_text())["homo_sapiens"]
    kept_fragments = book[kept[0]]["fragments"]
    experiment = versions["v2"] / "census_data" / "homo_sapiens"
    for array, names in kept_fragments.items():
        path = experiment / ("ms/RNA/" + array if array != "obs" else "obs")
        for fragment in names:
            for file in (path / "__fragments" / fragment).iterdir():
                old = versions["v1"] / file.relative_to(versions["v2"])
                assert os.path.samefile(file, old)  # one file on disk, in both versions
    replaced_old = json.loads((versions["v1"] / FRAGMENTS).read_text())["homo_sapiens"][replaced[0]]
    for array, names in replaced_old["fragments"].items():
        path = experiment / ("ms/RNA/" + array if array != "obs" else "obs")
        assert not any((path / "__fragments" / fragment).exists() for fragment in names)
