"""Gene coverage: which of the genes a query asks for the datasets it selects cells from measure.

Answered from the census store's feature-dataset presence matrix, before any h5ad is read: a gene no such
dataset measures, or an inner join that keeps no gene, stops the run with one line before any job.
"""

from __future__ import annotations

import logging

import pandas as pd

from cellquery.genes import gene_table
from cellquery.spec import QuerySpec, SpecError

log = logging.getLogger(__name__)
NAMED = 10  # genes named in a message; the counts are always complete


def gene_coverage(spec: QuerySpec, store: str, cells: dict[str, int], gene_ids: list[str] | None) -> dict:
    """The coverage of the query's genes over the datasets with selected cells; raises for a gene no dataset
    measures and (unless `allow_empty`) for an inner join that keeps no gene."""
    from cellquery.census import gene_counts

    contributing = [dataset for dataset, n in cells.items() if n]
    counts = gene_counts(store, spec.organism, contributing)
    asked = counts.reindex(gene_ids, fill_value=0) if gene_ids is not None else counts[counts > 0]
    partial = asked[(asked > 0) & (asked < len(contributing))]
    coverage = {
        "datasets": len(contributing),
        "genes_asked": len(asked) if gene_ids is not None else None,
        "in_every_dataset": int((asked == len(contributing)).sum()) if contributing else 0,
        "in_some_datasets": len(partial),
        # per requested gene: how many datasets measure it (not listed for a query of every gene)
        "partial_genes": {g: int(n) for g, n in partial.items()} if gene_ids is not None else {},
        "in_no_dataset": [g for g, n in asked.items() if n == 0] if contributing else [],
    }
    _check(spec, coverage)
    return coverage


def _check(spec: QuerySpec, coverage: dict) -> None:
    missing, n = coverage["in_no_dataset"], coverage["datasets"]
    if missing:
        raise SpecError(
            f"genes: {len(missing)} of {coverage['genes_asked']} requested genes are measured in none of the "
            f"{n} datasets the query selects cells from: {named(spec.organism, missing)}; leave them out"
        )
    if n and spec.gene_join == "inner" and not coverage["in_every_dataset"] and not spec.allow_empty:
        which = "requested gene" if coverage["genes_asked"] else "gene"
        raise SpecError(
            f"output.gene_join: no {which} is measured by all {n} datasets the query selects cells from, so "
            "the inner join keeps none (gene_join: outer keeps genes some datasets measure; "
            "allow_empty: true registers a result without genes)"
        )


def named(organism: str, gene_ids: list[str]) -> str:
    """`CD3E (ENSG00000198851), ...`: the first genes by symbol and id, and how many more."""
    symbols = gene_table(organism)["feature_name"]
    shown = [f"{symbols.get(g, g)} ({g})" for g in gene_ids[:NAMED]]
    more = f" and {len(gene_ids) - NAMED} more" if len(gene_ids) > NAMED else ""
    return ", ".join(shown) + more


def describe(coverage: dict, organism: str, join: str) -> list[str]:
    """Lines for the log and the plan: genes some datasets lack, and what the join does with them."""
    partial, n = coverage["partial_genes"], coverage["datasets"]
    if not coverage["in_some_datasets"]:
        return []
    lacking = sorted(partial, key=lambda g: (partial[g], g))
    if coverage["genes_asked"] is None:
        subject = f"{coverage['in_some_datasets']:,} genes are measured by only some of the {n} datasets"
    else:
        subject = f"{len(partial)} requested genes are measured by only some of the {n} datasets: " + named(
            organism, lacking
        )
    fate = "the inner join leaves them out" if join == "inner" else "zeros where a dataset lacks them"
    return [f"{subject} ({fate})"]


def log_coverage(coverage: dict, organism: str, join: str) -> None:
    kept = coverage["in_every_dataset"] if join == "inner" else None
    if kept is not None:
        log.info("inner join: %d genes measured by all %d datasets", kept, coverage["datasets"])
    for line in describe(coverage, organism, join):
        log.warning("%s", line)


def joined_genes(query: dict, dataset_ids: list[str]) -> pd.Index | None:
    """The genes of the organism the gene join must keep over these datasets (None: no dataset, no check)."""
    from cellquery.census import gene_counts

    if not dataset_ids:
        return None
    counts = gene_counts(query["census"]["path"], query["organism"], dataset_ids)
    genes = counts.index[counts == len(dataset_ids) if query["gene_join"] == "inner" else counts > 0]
    return genes.intersection(query["gene_ids"]) if query["gene_ids"] is not None else pd.Index(genes)
