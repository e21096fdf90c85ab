"""The Census-shaped SOMA store: the official reader returns exactly the source h5ads' cells and counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tiledbsoma as soma

from cellquery.demo import catalog
from cellquery.demo.catalog import artifact_dataset_id
from cellquery.files import h5ad
from cellquery.ingest.registry import COLLECTION_KEY
from cellquery.store.experiment import CATEGORICAL_OBS

# The demo's stores are of the newest generation: its builder's lists (tests/fixtures/census_builder/), and
# the tissue types its cell filter keeps (build_soma/anndata.py `make_anndata_cell_filter`).
BUILDER = json.loads((Path(__file__).parent / "fixtures" / "census_builder" / "2.4.0.json").read_text())
INCLUDED_TISSUE_TYPES = ("tissue", "organoid")


@pytest.fixture(scope="module")
def store(ln):
    return ln.Artifact.get(key=f"cell-census/{catalog.V2}/soma")


@pytest.fixture(scope="module")
def sources(ln):
    """Each V2 dataset's h5ad after the Census inclusion rules: (obs, counts matrix, gene ids)."""
    collection = ln.Collection.get(key=COLLECTION_KEY, version_tag=catalog.V2)
    included = {}
    for artifact in collection.artifacts.all():
        path = artifact.cache()
        dataset_id = artifact_dataset_id(artifact)
        obs = h5ad.read_frame(path, "obs")
        var = h5ad.read_frame(path, "raw/var")
        organism = h5ad.read_uns(path)["organism_ontology_term_id"]
        cells = obs["tissue_type"].isin(INCLUDED_TISSUE_TYPES) & obs["assay_ontology_term_id"].isin(
            BUILDER["rna_seq"]
        )
        genes = (var["feature_biotype"] == "gene") & (var["feature_reference"] == organism)
        rows = np.flatnonzero(cells.to_numpy())
        counts = next(iter(h5ad.row_blocks(path, rows, "raw/X", block=len(obs))))[1][:, genes.to_numpy()]
        included[dataset_id] = (obs.iloc[rows], counts, var.index[genes.to_numpy()], organism)
    return included


def test_official_reader_returns_the_source_cells_and_counts(store, sources):
    import cellxgene_census

    value_filter = "tissue_general == 'kidney' and cell_type in ['dendritic cell', 'neutrophil']"
    with cellxgene_census.open_soma(uri=str(store.path)) as census:
        got = cellxgene_census.get_anndata(
            census, organism="Homo sapiens", obs_value_filter=value_filter, X_name="raw"
        )
    expected_cells = 0
    for dataset_id, (obs, counts, genes, organism) in sources.items():
        if organism != catalog.HUMAN:
            continue
        mask = (
            (obs["tissue"] == "kidney") & obs["cell_type"].isin(["dendritic cell", "neutrophil"])
        ).to_numpy()
        expected_cells += int(mask.sum())
        mine = got[(got.obs["dataset_id"] == dataset_id).to_numpy()]
        assert list(mine.obs["observation_joinid"]) == list(obs["observation_joinid"][mask]), dataset_id
        census_counts = mine[:, mine.var["feature_id"].isin(genes).to_numpy()]
        order = pd.Index(census_counts.var["feature_id"]).get_indexer(genes)
        assert (census_counts.X[:, order] != counts[mask]).nnz == 0, dataset_id
        outside = mine[:, ~mine.var["feature_id"].isin(genes).to_numpy()].X
        assert outside.nnz == 0  # genes the dataset lacks stay empty
    assert got.n_obs == expected_cells > 0


def test_every_categorical_column_reads_back_with_its_labels(store, sources):
    """tiledbsoma 2.x can store categoricals with empty labels; every value must survive."""
    with soma.open(str(store.path)) as census:
        for name, experiment in census["census_data"].items():
            obs = experiment.obs.read().concat().to_pandas()
            expected = pd.concat(
                [o.assign(dataset_id=d) for d, (o, _, _, org) in sources.items() if name == _experiment(org)]
            )
            for column in CATEGORICAL_OBS:
                if column.startswith("tissue_general"):
                    continue
                assert obs[column].astype(str).value_counts().to_dict() == (
                    expected[column].astype(str).value_counts().to_dict()
                ), (name, column)


def _experiment(organism: str) -> str:
    return {
        catalog.HUMAN: "homo_sapiens",
        catalog.MOUSE: "mus_musculus",
        catalog.MARMOSET: "callithrix_jacchus",
    }[organism]


def test_layout_and_builder_checks(store, sources):
    with soma.open(str(store.path)) as census:
        info = census["census_info"]
        assert set(info.keys()) == {"summary", "datasets", "summary_cell_counts", "organisms"}
        datasets = info["datasets"].read().concat().to_pandas()
        assert set(datasets["dataset_id"]) == set(sources)
        summary = dict(info["summary"].read().concat().to_pandas()[["label", "value"]].values)
        assert summary["census_schema_version"] == "2.4.0"
        total = 0
        for name, experiment in census["census_data"].items():
            obs = experiment.obs.read().concat().to_pandas()
            assert (obs["soma_joinid"].to_numpy() == np.arange(len(obs))).all()
            blocks = obs.groupby("dataset_id", observed=True)["soma_joinid"].agg(["min", "max", "count"])
            assert ((blocks["max"] - blocks["min"] + 1) == blocks["count"]).all()  # contiguous per dataset
            assert set(obs["tissue_type"]) <= set(INCLUDED_TISSUE_TYPES)
            rna = experiment.ms["RNA"]
            var = rna.var.read().concat().to_pandas()
            raw = rna.X["raw"].read().tables().concat().to_pandas()
            assert not raw.duplicated(["soma_dim_0", "soma_dim_1"]).any()
            assert len(raw) == var["nnz"].sum() == obs["nnz"].sum()
            sums = raw.groupby("soma_dim_0")["soma_data"].sum()
            assert np.allclose(sums.to_numpy(), obs.loc[sums.index, "raw_sum"].to_numpy())
            normalized = rna.X["normalized"].read().tables().concat().to_pandas()
            assert np.allclose(normalized.groupby("soma_dim_0")["soma_data"].sum(), 1.0, atol=1e-4)
            assert not var["feature_id"].str.startswith("ERCC").any()  # spike-ins are not genes
            presence = rna["feature_dataset_presence_matrix"].read().tables().concat().to_pandas()
            joinid = {d: i for i, d in enumerate(datasets["dataset_id"])}
            for dataset_id, (_, _, genes, organism) in sources.items():
                if _experiment(organism) == name:
                    present = presence.loc[presence["soma_dim_0"] == joinid[dataset_id], "soma_dim_1"]
                    assert set(var.loc[present.to_numpy(), "feature_id"]) == set(genes)
            total += len(obs)
        assert total == sum(len(o) for o, *_ in sources.values()) == int(summary["total_cell_count"])


def test_seed_guide_soma_queries(store):
    with store.open() as census:
        experiment = census["census_data"]["homo_sapiens"]
        value_filter = "cell_type == 'microglial cell' and suspension_type == 'cell'"
        obs = experiment.obs.read(
            value_filter=value_filter, column_names=["soma_joinid", "cell_type"]
        ).concat()
        assert obs.num_rows > 0 and set(obs["cell_type"].to_pylist()) == {"microglial cell"}
        query = experiment.axis_query("RNA", obs_query=soma.AxisQuery(value_filter=value_filter))
        adata = query.to_anndata(X_name="raw", column_names={"obs": ["cell_type", "tissue"]})
        assert adata.n_obs == obs.num_rows and adata.X.sum() > 0


def test_normalized_is_the_builders_definition(store):
    """normalized = raw / row sum; for full-gene assays (Smart-seq2) raw / feature length first, rounded as
    the builder rounds (15 mantissa bits)."""
    full_gene_experiments = 0
    with soma.open(str(store.path)) as census:
        for experiment in census["census_data"].values():
            rna = experiment.ms["RNA"]
            obs = experiment.obs.read(column_names=["soma_joinid", "assay_ontology_term_id"]).concat()
            var = rna.var.read(column_names=["soma_joinid", "feature_length"]).concat().to_pandas()
            raw = rna.X["raw"].read().tables().concat().to_pandas()
            normalized = rna.X["normalized"].read().tables().concat().to_pandas()
            both = raw.merge(normalized, on=["soma_dim_0", "soma_dim_1"], suffixes=("_raw", "_norm"))
            assert len(both) == len(raw) == len(normalized)  # the same coordinates
            assays = obs.to_pandas().set_index("soma_joinid")["assay_ontology_term_id"].astype(str)
            full_gene = assays.loc[both["soma_dim_0"]].isin(BUILDER["full_gene_assay"]).to_numpy()
            lengths = var.set_index("soma_joinid").loc[both["soma_dim_1"], "feature_length"].to_numpy()
            scaled = np.where(full_gene, both["soma_data_raw"] / lengths, both["soma_data_raw"])
            sums = pd.Series(scaled).groupby(both["soma_dim_0"].to_numpy()).transform("sum").to_numpy()
            assert np.allclose(both["soma_data_norm"], scaled / sums, rtol=2**-15, atol=0)
            naive = both["soma_data_raw"] / both.groupby("soma_dim_0")["soma_data_raw"].transform("sum")
            if full_gene.any():  # the marmoset experiment has no Smart-seq2 cells
                assert not np.allclose(both["soma_data_norm"][full_gene], naive[full_gene])
                full_gene_experiments += 1
    assert full_gene_experiments == 2  # human and mouse
