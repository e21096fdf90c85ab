"""Random valid specs over the demo's vocabulary, run through the package's pipeline steps in-process, each
result compared with an independent oracle that loads the source h5ads whole and masks them.

The oracle shares no code with the pipeline: it evaluates the spec on the source obs itself (labels, ids,
ontology descendants from cellxgene-ontology-guide, multi-valued labels split into their terms, per-cell
statistics recomputed with numpy), predicts the errors the spec check must give (no cell, genes measured
nowhere, an inner join that keeps no gene), and the cells, obs values, genes and raw counts of the result.
"""

from __future__ import annotations

import json
from functools import cache

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from cellxgene_ontology_guide.ontology_parser import OntologyParser
from conftest import cell_organisms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellquery.demo import catalog
from cellquery.demo.catalog import artifact_dataset_id
from cellquery.errors import SpecError
from cellquery.files.atomic import write_json
from cellquery.ingest.registry import COLLECTION_KEY
from cellquery.instances.source import source_for
from cellquery.query.assemble import assemble
from cellquery.query.census_route import census_route
from cellquery.query.resolve import plan_query
from cellquery.query.shards import process_shard
from cellquery.spec.genes import gene_table
from cellquery.spec.query_spec import DEFAULT_OBS_COLUMNS, load_spec

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
ORGANISMS = {"human": catalog.HUMAN, "mouse": catalog.MOUSE, "marmoset": catalog.MARMOSET}
# What each release's generation calls cultured cells, and which tissue types its Census builder keeps (2.1.0:
# tissue; 2.4.0: tissue and organoid). Written out here: the oracle shares no code with the pipeline.
CULTURE = {catalog.V1: "cell culture", catalog.V2: "primary cell culture"}
CENSUS_TISSUE_TYPES = {catalog.V1: ("tissue",), catalog.V2: ("tissue", "organoid")}
LABELLED = ["cell_type", "tissue", "assay", "disease", "sex"]
# CELLxGENE schema 7: a cell's value in these (label and id column) may join several terms; each one matches
MULTI_VALUED = ("disease", "self_reported_ethnicity")
TERM_SEPARATOR = " || "
# Roots a spec may name in `descendants_of` (by label), with their ids, per column
ROOTS = {
    "cell_type": {
        "T cell": "CL:0000084",
        "B cell": "CL:0000236",
        "leukocyte": "CL:0000738",
        "glial cell": "CL:0000125",
        "epithelial cell": "CL:0000066",
    },
    "disease": {
        "adenocarcinoma": "MONDO:0004970",
        "viral infectious disease": "MONDO:0005108",
        "neurodegenerative disease": "MONDO:0005559",
    },
}


@pytest.fixture(scope="module")
def sources(ln):
    """Per collection version, per dataset: (artifact uid, the whole AnnData with raw counts)."""
    loaded = {}
    for version in (catalog.V1, catalog.V2):
        collection = ln.Collection.get(key=COLLECTION_KEY, version_tag=version)
        loaded[version] = {
            artifact_dataset_id(artifact): (artifact.uid, ad.read_h5ad(artifact.cache()))
            for artifact in collection.artifacts.order_by("key")
        }
    return loaded


def split_terms(column: str, value: str) -> list[str]:
    """A cell's terms in a column: a multi-valued column's value split, any other's whole."""
    multi_valued = column.removesuffix("_ontology_term_id") in MULTI_VALUED
    return value.split(TERM_SEPARATOR) if multi_valued else [value]


def holds_any(obs: pd.DataFrame, column: str, wanted) -> np.ndarray:
    """Which cells hold one of the wanted values among their terms."""
    wanted, values = set(wanted), obs[column].astype(str)
    hit = {v: not wanted.isdisjoint(split_terms(column, v)) for v in values.unique()}
    return values.map(hit).to_numpy(dtype=bool)


def named_terms(obs: pd.DataFrame, column: str) -> list[str]:
    """The terms a spec may name in a column (na excepted)."""
    return sorted({t for v in set(obs[column].astype(str)) for t in split_terms(column, v)} - {"na"})


@cache
def descendants(term: str) -> set[str]:
    parser = OntologyParser()
    return {term, *parser.get_term_descendants(term)}


def below(column: str, roots: str | list[str]) -> set[str]:
    """The terms at or below each root a spec names (by label)."""
    named = roots if isinstance(roots, list) else [roots]
    return set().union(*(descendants(ROOTS[column][root]) for root in named))


def ontology_aware(criterion: dict) -> bool:
    return "descendants_of" in criterion or isinstance(criterion.get("not_in"), dict)


def vocabulary(sources) -> dict:
    """What specs may name, per organism: obs values by column, and genes by symbol."""
    words = {}
    for organism, taxon in ORGANISMS.items():
        frames = [a for _, a in sources[catalog.V2].values() if (cell_organisms(a) == taxon).all()]
        obs = pd.concat([a.obs for a in frames])
        genes = sorted(set().union(*(set(a.raw.var_names) for a in frames)) - {""})
        symbols = gene_table(taxon)["feature_name"]
        words[organism] = {
            "labels": {c: named_terms(obs, c) for c in LABELLED},
            "ids": {c: named_terms(obs, f"{c}_ontology_term_id") for c in LABELLED},
            "suspension_type": sorted(set(obs["suspension_type"].astype(str))),
            "genes": [g for g in genes if g in symbols.index],
            "symbols": symbols,
            "unmeasured": [g for g in gene_table(taxon).index[:4000] if g not in set(genes)][:50],
        }
    return words


def spec_strategy(words: dict):
    def for_spec(organism: str, version: str | None):
        w = words[organism]
        culture = CULTURE[version or catalog.V2]
        label_criterion = st.sampled_from(LABELLED).flatmap(
            lambda c: st.one_of(
                st.tuples(
                    st.just(c), st.lists(st.sampled_from(w["labels"][c]), min_size=1, max_size=3, unique=True)
                ),
                st.tuples(st.just(c), st.sampled_from(w["ids"][c])),
                st.tuples(
                    st.just(c),
                    st.fixed_dictionaries(
                        {
                            "not_in": st.lists(
                                st.sampled_from(w["labels"][c]), min_size=1, max_size=2, unique=True
                            )
                        }
                    ),
                ),
            )
        )
        descendant = st.sampled_from(sorted(ROOTS)).flatmap(
            lambda column: st.tuples(st.just(column), ontology_criterion(sorted(ROOTS[column])))
        )
        other = st.one_of(
            st.tuples(st.just("suspension_type"), st.sampled_from(w["suspension_type"])),
            st.tuples(st.just("is_primary_data"), st.booleans()),
            st.tuples(st.just("tissue_type"), st.sampled_from(["tissue", ["tissue", culture], culture])),
            st.tuples(
                st.sampled_from(["raw_sum", "nnz"]), st.fixed_dictionaries({"ge": st.integers(200, 1500)})
            ),
        )
        cells = st.lists(
            st.one_of(label_criterion, label_criterion, descendant, other), min_size=1, max_size=3
        ).map(lambda pairs: dict(pairs))
        genes = st.one_of(
            st.none(),
            st.lists(st.sampled_from(w["genes"]), min_size=1, max_size=12, unique=True).flatmap(
                lambda ids: st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)).map(
                    lambda as_symbol: [
                        w["symbols"][g] if s else g for g, s in zip(ids, as_symbol, strict=True)
                    ]
                )
            ),
            st.lists(st.sampled_from(w["unmeasured"]), min_size=1, max_size=2, unique=True),
        )
        source = {} if version is None else {"source": st.just({"version": version})}
        return st.fixed_dictionaries(
            {
                **source,
                "name": st.just("random"),
                "organism": st.just(organism),
                "cells": cells,
                "allow_empty": st.booleans(),
                "output": st.fixed_dictionaries({"gene_join": st.sampled_from(["inner", "outer"])}),
            },
            optional={
                "genes": genes.filter(bool),
                "obs_columns": st.lists(
                    st.sampled_from(DEFAULT_OBS_COLUMNS), min_size=1, max_size=4, unique=True
                ),
            },
        )

    organisms = st.sampled_from(["human", "human", "mouse", "marmoset"])
    versions = st.sampled_from([None, catalog.V1, catalog.V2])  # None: the latest
    return st.tuples(organisms, versions).flatmap(lambda drawn: for_spec(*drawn))


def ontology_criterion(roots: list[str]):
    """Ontology-aware include and exclude: one root or several, their descendants kept, dropped, or both."""
    terms = st.one_of(
        st.sampled_from(roots), st.lists(st.sampled_from(roots), min_size=2, max_size=3, unique=True)
    )
    return st.one_of(
        st.fixed_dictionaries({"descendants_of": terms}),
        st.fixed_dictionaries({"not_in": st.fixed_dictionaries({"descendants_of": terms})}),
        st.fixed_dictionaries(
            {"descendants_of": terms, "not_in": st.fixed_dictionaries({"descendants_of": terms})}
        ),
    )


class Oracle:
    """The result a spec must give, from the whole source files: or the error the check must raise."""

    def __init__(self, spec: dict, datasets: dict, version: str):
        self.spec, self.taxon, self.version = spec, ORGANISMS[spec["organism"]], version
        self.selected = {}
        self.held = any((cell_organisms(a) == self.taxon).any() for _, a in datasets.values())
        for dataset_id, (_, adata) in datasets.items():
            if not self.organism_genes(adata):  # a xenograft's host cells: on the graft's genes only
                continue
            mask = (cell_organisms(adata) == self.taxon) & self.mask(adata)
            if mask.any():
                self.selected[dataset_id] = adata[mask]
        self.gene_ids = self.requested_genes()

    def mask(self, adata: ad.AnnData) -> np.ndarray:
        obs, mask = adata.obs, np.ones(adata.n_obs, dtype=bool)
        for column, criterion in self.spec["cells"].items():
            if column in ("raw_sum", "nnz"):
                raw = adata.raw.to_adata()
                genes = (
                    (raw.var["feature_biotype"] == "gene") & (raw.var["feature_reference"] == self.taxon)
                ).to_numpy()
                counts = raw.X[:, genes].tocsr()
                stat = (
                    np.asarray(counts.sum(axis=1)).ravel() if column == "raw_sum" else np.diff(counts.indptr)
                )
                mask &= stat >= criterion["ge"]
            elif isinstance(criterion, dict) and ontology_aware(criterion):
                id_column = f"{column}_ontology_term_id"
                if "descendants_of" in criterion:
                    mask &= holds_any(obs, id_column, below(column, criterion["descendants_of"]))
                if "not_in" in criterion:
                    mask &= ~holds_any(obs, id_column, below(column, criterion["not_in"]["descendants_of"]))
            elif isinstance(criterion, dict):
                mask &= ~holds_any(obs, column, criterion["not_in"])
            elif column in LABELLED and isinstance(criterion, str) and ":" in criterion:
                mask &= holds_any(obs, f"{column}_ontology_term_id", [criterion])
            elif column == "is_primary_data":
                mask &= (obs[column] == criterion).to_numpy()
            else:
                wanted = criterion if isinstance(criterion, list) else [criterion]
                mask &= holds_any(obs, column, wanted)
        return mask

    def requested_genes(self) -> list[str] | None:
        if "genes" not in self.spec:
            return None
        table = gene_table(self.taxon)
        by_symbol = pd.Series(table.index, index=table["feature_name"])
        by_symbol = by_symbol[~by_symbol.index.duplicated()]
        return list(dict.fromkeys(g if g in table.index else by_symbol[g] for g in self.spec["genes"]))

    def included(self) -> dict[str, ad.AnnData]:
        """The selected cells the release's Census keeps (its tissue types; demo assays are RNA assays)."""
        kept = {
            d: a[a.obs["tissue_type"].astype(str).isin(CENSUS_TISSUE_TYPES[self.version]).to_numpy()]
            for d, a in self.selected.items()
        }
        return {d: a for d, a in kept.items() if a.n_obs}

    def organism_genes(self, adata: ad.AnnData) -> set[str]:
        var = adata.raw.var
        return set(var.index[(var["feature_biotype"] == "gene") & (var["feature_reference"] == self.taxon)])

    def expected_error(self) -> str | None:
        if not self.held:
            return "organism:"  # the release's census store has no experiment of the organism
        included = self.included()
        if not included and not self.spec["allow_empty"]:
            return "cells: the query matches"
        if not included:
            return None
        measured = [self.organism_genes(a) for a in included.values()]
        asked = set(self.gene_ids) if self.gene_ids is not None else set().union(*measured)
        if self.gene_ids is not None and any(not any(g in m for m in measured) for g in asked):
            return "genes:"
        if self.spec["output"]["gene_join"] == "inner" and not asked & set.intersection(*measured):
            return None if self.spec["allow_empty"] else "output.gene_join: no"
        return None

    def genes(self) -> set[str]:
        """Features of the result: the join over the datasets that contribute cells."""
        holding = [set(a.raw.var_names) for a in self.selected.values()]
        if not holding:
            return set()
        joined = (
            set.intersection(*holding)
            if self.spec["output"]["gene_join"] == "inner"
            else set().union(*holding)
        )
        return joined & set(self.gene_ids) if self.gene_ids is not None else joined


def run_pipeline(spec_path, demo, workdir) -> tuple[ad.AnnData, dict]:
    """resolve, one shard of every artifact, census, assemble: the rules' functions, without Snakemake."""
    spec = load_spec(spec_path)
    results = workdir / "results" / spec.name
    source = source_for(spec, demo)
    query, table = plan_query(spec, source)
    query_path, manifest_path = results / "query.json", results / "manifest.tsv"
    write_json(query_path, query)
    table.to_csv(manifest_path, sep="\t", index=False)
    shard = results / "shards" / "0.json"
    process_shard(spec, source, query_path, manifest_path, list(table["uid"]), shard)
    census_route(query_path, manifest_path, results / "census.h5ad")
    out = results / f"{spec.name}.h5ad"
    assemble([shard], results / "census.h5ad", query_path, manifest_path, out, results / "validation.json")
    return ad.read_h5ad(out), json.loads((results / "validation.json").read_text())


def check_against(oracle: Oracle, result: ad.AnnData, report: dict) -> None:
    assert report["status"] == "passed"
    keys = result.obs["dataset_id"].astype(str) + ":" + result.obs["observation_joinid"].astype(str)
    wanted = {f"{d}:{j}" for d, a in oracle.selected.items() for j in a.obs["observation_joinid"]}
    assert set(keys) == wanted and keys.is_unique
    assert set(result.var_names) == oracle.genes()
    columns = oracle.spec.get("obs_columns") or list(DEFAULT_OBS_COLUMNS)
    assert set(result.obs.columns) == {"dataset_id", "observation_joinid", *columns}
    for column in result.obs.columns:
        if isinstance(result.obs[column].dtype, pd.CategoricalDtype):
            assert set(result.obs[column].cat.categories) == set(result.obs[column].astype(str))
    for dataset_id, source in oracle.selected.items():
        mine = result[(result.obs["dataset_id"] == dataset_id).to_numpy()]
        rows = pd.Index(mine.obs["observation_joinid"]).get_indexer(source.obs["observation_joinid"])
        for column in columns:
            assert (
                mine.obs[column].astype(str).to_numpy()[rows] == source.obs[column].astype(str).to_numpy()
            ).all()
        raw = source.raw.to_adata()
        measured = [g for g in result.var_names if g in raw.var_names]
        absent = [g for g in result.var_names if g not in raw.var_names]
        assert (mine[rows, measured].X != raw[:, measured].X).nnz == 0
        assert mine[:, absent].X.nnz == 0  # outer join: zeros where the dataset lacks a gene


@pytest.mark.slow
def test_random_specs_give_what_the_source_files_hold(demo, ln, sources, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("slices-home"))  # slices/ of every example, out of the checkout
    words = vocabulary(sources)
    seen = {"runs": 0, "errors": 0, "drawn": set()}

    @SETTINGS
    @given(spec=spec_strategy(words))
    def case(spec):
        workdir = tmp_path_factory.mktemp("random")
        spec_path = workdir / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        version = spec.get("source", {}).get("version", catalog.V2)
        oracle = Oracle(spec, sources[version], version)
        expected = oracle.expected_error()
        if expected is not None:
            with pytest.raises(SpecError) as error:
                plan_query(load_spec(spec_path), source_for(load_spec(spec_path), demo))
            assert str(error.value).startswith(expected), (spec, str(error.value))
            seen["errors"] += 1
            return
        result, report = run_pipeline(spec_path, demo, workdir)
        check_against(oracle, result, report)
        seen["runs"] += 1
        seen["drawn"] |= {version, spec["organism"], *drawn_cells(oracle), *drawn_criteria(spec)}

    case()
    assert seen["runs"] + seen["errors"] >= 60 and seen["runs"] >= 20, seen
    kinds = {"comorbid", "10x 3' v4", "descendants excluded", "several roots", "kept and excluded"}
    assert {catalog.V1, catalog.V2, *ORGANISMS, *kinds} <= seen["drawn"], seen


def drawn_criteria(spec: dict) -> set[str]:
    """Which kinds of ontology-aware criteria a spec that ran holds."""
    drawn = set()
    for criterion in spec["cells"].values():
        if not isinstance(criterion, dict) or not ontology_aware(criterion):
            continue
        excluded = criterion.get("not_in", {}).get("descendants_of")
        roots = [criterion.get("descendants_of"), excluded]
        drawn |= {"descendants excluded"} if excluded else set()
        drawn |= {"several roots"} if any(isinstance(r, list) for r in roots) else set()
        drawn |= {"kept and excluded"} if all(roots) else set()
    return drawn


def drawn_cells(oracle: Oracle) -> set[str]:
    """Which of the newest release's kinds of cells a result holds: comorbid donors' (`A || B`), 10x 3' v4."""
    drawn = set()
    for adata in oracle.selected.values():
        if adata.obs["disease"].astype(str).str.contains(TERM_SEPARATOR, regex=False).any():
            drawn.add("comorbid")
        if (adata.obs["assay_ontology_term_id"] == catalog.TENX_3V4).any():
            drawn.add("10x 3' v4")
    return drawn
