"""What each value a spec names selects, read from the census store before any job (no h5ad is read): cells
and datasets per value, and a warning, one line each, for a listed value that selects no cell while the
others do, or a `not_in` value that excludes no cell while its ontology descendants hold some."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from cellquery.cellxgene.ontology import label
from cellquery.query.census_route import experiment, obs_filter, open_store
from cellquery.spec.criteria import Criterion
from cellquery.spec.query_spec import ID_COLUMNS, MULTI_VALUED_COLUMNS, terms

NAMED = 5  # descendants a warning names
Descendants = Callable[[str, str], tuple[str, ...]]  # (id column, term) -> its descendants


def value_counts(
    store: dict,
    criteria: list[Criterion],
    organism: str,
    dataset_ids: list[str],
    descendants: Descendants,
    settings: dict | None = None,
) -> tuple[list[dict], list[str]]:
    """Per `in`/`not_in` criterion, the census cells and datasets each value selects (or excludes) among the
    cells the other criteria select; and the warnings."""
    counted = [c for c in criteria if c.op in ("in", "not_in") and all(isinstance(v, str) for v in c.values)]
    tables, warnings = [], []
    if not counted or not dataset_ids:
        return tables, warnings
    with open_store(store, settings) as census:
        obs = experiment(census, store, organism).obs

        def cells(among: list[Criterion], column: str, values) -> dict[str, dict]:
            columns = list(dict.fromkeys(["dataset_id", column]))
            table = obs.read(column_names=columns, value_filter=obs_filter(obs, among, dataset_ids)).concat()
            return per_value(table.to_pandas(), column, values)

        for criterion in counted:
            table = _counted(cells, criterion, criteria)
            tables.append(table)
            warnings += _warnings(cells, criterion, criteria, table["values"], descendants)
    return tables, warnings


def _counted(cells, criterion: Criterion, criteria: list[Criterion]) -> dict:
    """What each value of the criterion selects among the cells the others select (`not_in`: excludes)."""
    among = criteria
    if criterion.op == "not_in":
        others = [c for c in criteria if c is not criterion]
        among = [*others, Criterion(criterion.column, "in", criterion.values)]
    values = cells(among, criterion.column, criterion.values)
    return {"column": criterion.column, "op": criterion.op, "values": values}


def _warnings(cells, criterion: Criterion, criteria: list[Criterion], per_value: dict, descendants) -> list:
    """A line for each value the spec listed that selects (or excludes) no cell."""
    found = []
    # the cells of a value's descendants the query would take (`in`) or keeps (`not_in`)
    base = criteria if criterion.op == "not_in" else [c for c in criteria if c is not criterion]
    for value, name in zip(criterion.values, criterion.names, strict=False):
        if per_value[value]["cells"] or criterion.column not in ID_COLUMNS:
            continue
        below = descendants(criterion.column, value)
        kept = [*base, Criterion(criterion.column, "in", below)]
        found += _warning(criterion, name, per_value, cells(kept, criterion.column, below) if below else {})
    return found


def per_value(frame: pd.DataFrame, column: str, values=None) -> dict[str, dict]:
    """Cells and datasets per value, of `values` or of every value held (each term of a multi-valued
    column's value counts for that term)."""
    cells = frame[list(dict.fromkeys([column, "dataset_id"]))].astype(str)  # a criterion on dataset_id too
    if column in MULTI_VALUED_COLUMNS:
        cells = cells.assign(**{column: cells[column].map(terms)}).explode(column)
    if values is None:
        values = sorted(set(cells[column]))
    grouped = cells[cells[column].isin(list(values))].groupby(column)["dataset_id"]
    found = pd.DataFrame({"cells": grouped.size(), "datasets": grouped.nunique()})
    return {
        value: {"cells": int(found["cells"].get(value, 0)), "datasets": int(found["datasets"].get(value, 0))}
        for value in values
    }


def _warning(criterion: Criterion, name: str, per_value: dict, held: dict) -> list[str]:
    """One line: a listed value that selects (or excludes) no cell, and what its descendants hold."""
    where = f"cells.{ID_COLUMNS[criterion.column]}"
    holding = sorted(((c["cells"], t) for t, c in held.items() if c["cells"]), reverse=True)
    shown = ", ".join(f"{label(t)} {n:,}" for n, t in holding[:NAMED])
    more = f" and {len(holding) - NAMED} more" if len(holding) > NAMED else ""
    total = sum(n for n, _ in holding)
    if criterion.op == "not_in":
        if not holding:
            return []
        return [
            f"{where}: not_in {name!r} excludes no cell, but the query keeps {total:,} cells of its "
            f"descendants ({shown}{more}): to exclude them too, write {{not_in: {{descendants_of: {name}}}}}"
        ]
    others = sum(c["cells"] for c in per_value.values())
    if not others:
        return []  # nothing selected at all: the spec check refuses the query
    hint = (
        f"; its descendants hold {total:,} ({shown}{more}): write {{descendants_of: {name}}} to take them"
        if holding
        else ""
    )
    return [f"{where}: {name!r} selects no cell while the other values select {others:,}{hint}"]


def describe_values(tables: list[dict]) -> list[str]:
    """A line per criterion: each value with the cells and datasets it selects (or excludes), those with
    cells first; values with none are named when the spec listed them, else counted."""
    lines = []
    for table in tables:
        column, verb = ID_COLUMNS.get(table["column"], table["column"]), VERBS[table["op"]]
        holding = [(v, c) for v, c in table["values"].items() if c["cells"]]
        empty = [v for v, c in table["values"].items() if not c["cells"]]
        shown = [f"{_named(column, v)} {c['cells']:,} cells in {c['datasets']}" for v, c in holding]
        if len(empty) <= NAMED:
            shown += [f"{_named(column, v)} none" for v in empty]
        else:
            shown.append(f"{len(empty)} more values none")
        lines.append(f"cells.{column} {verb}: " + "; ".join(shown))
    return lines


VERBS = {"in": "selects", "not_in": "excludes"}


def _named(column: str, value: str) -> str:
    """A value as a biologist reads it: an ontology term by its label, anything else as it is."""
    if column in ID_COLUMNS.values() and ":" in value:
        return label(value)
    return value
