"""Gene coverage: which of the genes a query asks for the datasets it selects cells from measure.

Answered from the census store's feature-dataset presence matrix, before any h5ad is read: a gene no such
dataset measures, or an inner join that keeps no gene, stops the run with one line before any job.
"""

from __future__ import annotations

import logging
from functools import cache

import pandas as pd

from cellquery.errors import SpecError
from cellquery.spec.genes import gene_table, schemas_with_genes_of
from cellquery.spec.query_spec import QuerySpec

log = logging.getLogger(__name__)
NAMED = 10  # genes named in a message; the counts are always complete


def gene_coverage(
    spec: QuerySpec,
    store: dict,
    cells: dict[str, int],
    gene_ids: list[str] | None,
    settings: dict | None = None,
) -> dict:
    """The coverage of the query's genes over the datasets with selected cells; raises for a gene no dataset
    measures and (unless `allow_empty`) for an inner join that keeps no gene."""
    from cellquery.query.census_route import gene_counts

    contributing = [dataset for dataset, n in cells.items() if n]
    counts = gene_counts(store, spec.organism, contributing, settings)
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
        one = n == 1
        where = "are not measured in the one dataset" if one else f"are measured in none of the {n} datasets"
        raise SpecError(
            f"genes: {len(missing)} of {coverage['genes_asked']} requested genes {where} the query selects "
            f"cells from: {named(spec.organism, missing)}; leave them out"
        )
    if n and spec.gene_join == "inner" and not coverage["in_every_dataset"] and not spec.allow_empty:
        which = "requested gene" if coverage["genes_asked"] else "gene"
        raise SpecError(
            f"output.gene_join: no {which} is measured by all {n} datasets the query selects cells from, so "
            "the inner join keeps none (gene_join: outer keeps genes some datasets measure; "
            "allow_empty: true registers a result without genes)"
        )


def named(organism: str, gene_ids: list[str]) -> str:
    """`CD3E (ENSG00000198851), ...`: the first genes by symbol (of any generation's reference) and id, and
    how many more."""
    symbols = _symbols_of_every_generation(organism)
    shown = [f"{symbols.get(g, g)} ({g})" for g in gene_ids[:NAMED]]
    more = f" and {len(gene_ids) - NAMED} more" if len(gene_ids) > NAMED else ""
    return ", ".join(shown) + more


@cache
def _symbols_of_every_generation(organism: str) -> pd.Series:
    """Symbol per gene id in any generation's reference (the newest's where they differ)."""
    references = [gene_table(organism, schema)["feature_name"] for schema in schemas_with_genes_of(organism)]
    symbols = pd.concat(references)
    return symbols[~symbols.index.duplicated()]


def describe(coverage: dict, organism: str, join: str) -> list[str]:
    """Lines for the plan and the log: what the join keeps, and the genes only some datasets measure."""
    asked, n, partial = coverage["genes_asked"], coverage["datasets"], coverage["in_some_datasets"]
    if join == "inner":
        kept = f"{coverage['in_every_dataset']:,}" + (f" of {asked:,} requested" if asked is not None else "")
        lines = [
            f"inner join: {kept} genes, those measured by every one of the {n} datasets with selected cells"
        ]
    else:
        kept = f"{asked:,} requested genes" if asked is not None else "every gene"
        lines = [f"outer join: {kept} measured by any of the {n} datasets with selected cells"]
    if partial:
        fate = "the inner join leaves them out" if join == "inner" else "zeros where a dataset lacks them"
        which = f"{partial:,} {'requested ' if asked is not None else ''}gene{'s' if partial > 1 else ''}"
        lacking = sorted(coverage["partial_genes"], key=lambda g: (coverage["partial_genes"][g], g))
        named_genes = f": {named(organism, lacking)}" if lacking else ""
        verb = "are" if partial > 1 else "is"
        lines.append(f"{which} {verb} measured by only some of the {n} datasets{named_genes} ({fate})")
    return lines


def left_out_by_join(coverage: dict, organism: str, join: str) -> list[str]:
    """The spec check's warning for requested genes an inner join leaves out (only some datasets measure
    them): a marker a biologist listed is not dropped in the log alone."""
    partial = coverage["partial_genes"]
    if join != "inner" or not partial:
        return []
    lacking = sorted(partial, key=lambda g: (partial[g], g))
    them, are = ("them", "are") if len(lacking) > 1 else ("it", "is")
    return [
        f"genes: {named(organism, lacking)} {are} measured by only some of the {coverage['datasets']} "
        f"datasets, so the inner join leaves {them} out; output.gene_join: outer keeps {them}, zeros where a "
        f"dataset lacks {them}"
    ]


def log_coverage(coverage: dict, organism: str, join: str) -> None:
    for line in describe(coverage, organism, join):
        log.info("%s", line)


def joined_genes(query: dict, dataset_ids: list[str]) -> pd.Index | None:
    """The genes of the organism the gene join must keep over these datasets (None: no dataset, no check)."""
    from cellquery.query.census_route import gene_counts

    if not dataset_ids:
        return None
    counts = gene_counts(query["census"], query["organism"], dataset_ids, query["storage"]["object_storage"])
    genes = counts.index[counts == len(dataset_ids) if query["gene_join"] == "inner" else counts > 0]
    return genes.intersection(query["gene_ids"]) if query["gene_ids"] is not None else pd.Index(genes)
