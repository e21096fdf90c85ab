"""Cell criteria: resolved against the registry, compiled to a pandas obs mask and a SOMA value_filter.

A multi-valued column (`spec.MULTI_VALUED_COLUMNS`) matches per term: a cell holding `A || B` (schema 5.x
ethnicities: `A,B`) is among the cells of `A` and of `B`, and `not_in: [A]` drops it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cellquery.cellxgene import ontology
from cellquery.spec.query_spec import (
    BOOLEAN_COLUMNS,
    CELL_STATS,
    ID_COLUMNS,
    INTEGER_STATS,
    MULTI_VALUED_COLUMNS,
    ONTOLOGY_COLUMNS,
    ULABEL_COLUMNS,
    Problems,
    QuerySpec,
    closest,
    suggest,
    terms,
    unknown_values,
)

TERM_ID = re.compile(r"^[A-Za-z]+:[0-9A-Za-z_]+$")
COMPARISONS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
NO_CELL, EVERY_CELL = "soma_joinid < 0", "soma_joinid >= 0"  # value_filters selecting no cell, every cell
SPECIAL_TERMS = {"na", "unknown"}
# Cultured cells (tissue_type "primary cell culture") name a cell type as their tissue, as in CELLxGENE.
ALSO_NAMED_BY = {"tissue": ("CellType",)}
SHORTHANDS = {"sex": {"F": "female", "M": "male"}}  # what a spec may write for a term, suggested for it


@dataclass(frozen=True)
class Criterion:
    """One condition on one obs column, with every name already resolved to the stored value."""

    column: str
    op: str  # "in", "not_in", "==", ">", ">=", "<", "<="
    values: tuple[Any, ...]
    names: tuple[str, ...] = field(default=(), compare=False)  # as the spec listed the values (if it did)

    def as_dict(self) -> dict:
        return {"column": self.column, "op": self.op, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict) -> Criterion:
        return cls(data["column"], data["op"], tuple(data["values"]))


def _term_ids(registries: list, column: str, values: list) -> list[str]:
    """Names or ontology ids -> ontology ids, checked against the registries (every unknown value named)."""
    ids, unknown = [], []
    for value in map(str, values):
        if value in SPECIAL_TERMS:
            ids.append(value)
            continue
        record = _record(registries, **{_field(value): value})
        if record is None:
            unknown.append(value)
        else:
            ids.append(record.ontology_id)
    if unknown:
        raise unknown_values(
            f"cells.{column}", unknown, lambda value: _unknown_term(registries, value, column)
        )
    return ids


def _field(value: str) -> str:
    return "ontology_id" if TERM_ID.match(value) else "name"


def _unknown_term(registries: list, value: str, column: str) -> str:
    """An unknown name or id, with what to write instead: a term of the ontology the instance lacks gets its
    nearest relatives the instance holds (never a neighbour by spelling alone, which can be another branch);
    a misspelling gets the closest name (synonyms first), with its term id."""
    field = _field(value)
    names, aliases = _known_terms(registries, field)
    shorthands = SHORTHANDS.get(ID_COLUMNS.get(column, column), {})
    term_id = ontology.named(value, _prefixes(registries)) if field == "name" else None
    held = _held_ids(registries)
    if term_id is not None and term_id not in held:
        return f"unknown name {value!r}: {_relatives(term_id, held)}"
    close = ontology.label(term_id) if term_id else closest(value, names, {**aliases, **shorthands})
    if close is None:
        return f"unknown {field.replace('_', ' ')} {value!r}"
    record = _record(registries, **{field: close})
    found = record.ontology_id if record is not None else close
    hint = f"did you mean {close!r} ({found})?{_unlabelled(registries, found, held)}"
    return f"unknown {field.replace('_', ' ')} {value!r}; {hint}"


def _prefixes(registries: list) -> list[str]:
    return [prefix for registry in registries for prefix in ontology.prefixes_of(registry.__name__)]


def _held_ids(registries: list) -> set[str]:
    return {t for registry in registries for t in registry.filter().values_list("ontology_id", flat=True)}


def _named_terms(term_ids: Iterable[str]) -> str:
    return ", ".join(f"{ontology.label(term)!r} ({term})" for term in term_ids)


def _relatives(term_id: str, held: set[str]) -> str:
    """A term the instance lacks, and its nearest terms the instance holds below and above it."""
    below = {t: ontology.ancestors(t)[term_id] for t in held if term_id in ontology.ancestors(t)}
    above = {t: d for t, d in ontology.ancestors(term_id).items() if t in held}
    nearest = [
        f"below it {_named_terms(_closest_few(below))}" if below else "",
        f"above it {_named_terms(_closest_few(above, 1))}" if above else "",
    ]
    said = "; ".join(part for part in nearest if part)
    where = f"; the nearest terms it holds: {said}" if said else ""
    label = ontology.label(term_id)
    return f"the ontology's {label!r} ({term_id}), a term this instance holds no data of{where}"


def _closest_few(distances: dict[str, int], count: int = 3) -> list[str]:
    return sorted(distances, key=lambda term: (distances[term], ontology.label(term)))[:count]


def _unlabelled(registries: list, term_id: str, held: set[str]) -> str:
    """What to add when no dataset is labelled with the term, but some with terms below it."""
    if not TERM_ID.match(term_id) or _labelling(registries, [term_id]):
        return ""
    below = [t for t in held if term_id in ontology.ancestors(t)]
    labelled = sorted(_labelling(registries, below), key=ontology.label)
    if not labelled:
        return ""
    return (
        f" (no dataset is labelled with it, some with terms below it: {_named_terms(labelled[:3])}; "
        "`descendants_of` selects them)"
    )


def _labelling(registries: list, term_ids: list[str]) -> set[str]:
    """The terms that label at least one artifact."""
    return {
        term
        for registry in registries
        for term in registry.filter(ontology_id__in=term_ids, artifacts__isnull=False).values_list(
            "ontology_id", flat=True
        )
    }


def _record(registries: list, **field):
    """The first registry's record with this name or id."""
    return next((r for registry in registries if (r := registry.filter(**field).first()) is not None), None)


def _known_terms(registries: list, field: str) -> tuple[list[str], dict[str, str]]:
    """The registries' names (or ids), and their synonyms as aliases of the names."""
    if field != "name":
        return [term for r in registries for term in r.filter().values_list(field, flat=True)], {}
    rows = [row for registry in registries for row in registry.filter().values_list("name", "synonyms")]
    aliases = {synonym: name for name, synonyms in rows for synonym in (synonyms or "").split("|") if synonym}
    return [name for name, _ in rows], aliases


def _descendants(registries: list, column: str, terms: str | list[str]) -> tuple[str, ...]:
    """Each term and all its ontology descendants (a term or several: their union), roots first."""
    roots = _term_ids(registries, column, terms if isinstance(terms, list) else [terms])
    below = {c.ontology_id for root in roots for c in _record(registries, ontology_id=root).query_children()}
    return tuple(dict.fromkeys([*roots, *sorted(below - set(roots))]))


def _labels(column: str, values: list) -> list:
    """Values of a label column (suspension_type, donor_id), checked against the labels of that type.

    An instance that keeps no labels of the type is not checked: only the data can say then.
    """
    if column not in ULABEL_COLUMNS:
        return values
    import lamindb as ln

    known = set(ln.ULabel.filter(type__name=ULABEL_COLUMNS[column]).values_list("name", flat=True))
    unknown = [value for value in values if known and str(value) not in known]
    if unknown:

        def described(value) -> str:
            return f"unknown value {value!r}{suggest(value, sorted(known))}"

        raise unknown_values(f"cells.{column}", unknown, described)
    return values


def _registries(label: str, bionty) -> list:
    """The bionty registries that name a column's terms."""
    registry_name = ONTOLOGY_COLUMNS[label][1]
    return [getattr(bionty, name) for name in (registry_name, *ALSO_NAMED_BY.get(label, ()))]


def descendants_below(id_column: str, term: str) -> tuple[str, ...]:
    """A term's ontology descendants (not the term itself), through bionty (a connected instance)."""
    import bionty

    label = ID_COLUMNS[id_column]
    return _descendants(_registries(label, bionty), label, term)[1:]


def _listed(id_column: str, op: str, names: list, registries: list, column: str) -> Criterion:
    return Criterion(id_column, op, tuple(_term_ids(registries, column, names)), tuple(map(str, names)))


def _resolve_one(column: str, criterion: Any, bionty) -> list[Criterion]:
    """A spec's criterion on one column as backend criteria: `{descendants_of: X, not_in: ...}` is two."""
    label = ID_COLUMNS.get(column, column)
    if label in ONTOLOGY_COLUMNS:
        id_column, registries = ONTOLOGY_COLUMNS[label][0], _registries(label, bionty)
        if not isinstance(criterion, dict):
            values = criterion if isinstance(criterion, list) else [criterion]
            return [_listed(id_column, "in", values, registries, column)]
        found = []
        if "descendants_of" in criterion:
            kept = _descendants(registries, column, criterion["descendants_of"])
            found.append(Criterion(id_column, "in", kept))
        excluded = criterion.get("not_in")
        if isinstance(excluded, dict):
            dropped = _descendants(registries, column, excluded["descendants_of"])
            found.append(Criterion(id_column, "not_in", dropped))
        elif excluded is not None:
            found.append(_listed(id_column, "not_in", excluded, registries, column))
        return found
    if isinstance(criterion, dict):
        values = _labels(column, _typed(column, criterion["not_in"]))
        return [Criterion(column, "not_in", tuple(values), tuple(map(str, values)))]
    values = _labels(column, _typed(column, criterion if isinstance(criterion, list) else [criterion]))
    if column in BOOLEAN_COLUMNS and len(set(values)) == 1:
        return [Criterion(column, "==", (values[0],))]
    return [Criterion(column, "in", tuple(values), tuple(map(str, values)))]


def _typed(column: str, values: list) -> list:
    """Values as the column stores them: text in a label column (`donor_id: 12`), numbers in a statistic."""
    if column in BOOLEAN_COLUMNS:
        return values
    if column in INTEGER_STATS:
        return [int(v) for v in values]
    if column in CELL_STATS:
        return [float(v) for v in values]
    return [str(v) for v in values]


def _whole_bound(op: str, bound: float) -> int:
    """The integer bound an integer column meets exactly as it meets `bound` (`nnz > 1.5` is `nnz > 1`)."""
    return math.floor(bound) if op in ("gt", "le") else math.ceil(bound)


def comparisons(column: str, bounds: dict) -> list[Criterion]:
    if column in INTEGER_STATS:
        bounds = {op: _whole_bound(op, bound) for op, bound in bounds.items()}
    return [Criterion(column, COMPARISONS[op], (bound,)) for op, bound in sorted(bounds.items())]


def resolve(spec: QuerySpec) -> list[Criterion]:
    """The spec's cell criteria with names resolved through bionty (needs a connected instance)."""
    import bionty

    criteria, problems = [], Problems()
    for column, criterion in spec.cells.items():
        if column in CELL_STATS and isinstance(criterion, dict):
            criteria += comparisons(column, criterion)
        else:
            with problems.check():
                criteria += _resolve_one(column, criterion, bionty)
    problems.raise_any()
    return criteria


def obs_mask(obs: pd.DataFrame, criteria: list[Criterion]) -> np.ndarray:
    """Backend (b): which rows of an h5ad's obs match every criterion."""
    mask = np.ones(len(obs), dtype=bool)
    for c in criteria:
        column = obs[c.column]
        if c.op in ("in", "not_in"):
            hit = _members(column, c)
            mask &= hit if c.op == "in" else ~hit
        else:
            mask &= _compare(column.to_numpy(), c.op, c.values[0])
    return mask


def holding_any(stored: Iterable[str], values: Iterable) -> list[str]:
    """The stored values of a multi-valued column with one of `values` among their terms."""
    wanted = {str(v) for v in values}
    return [value for value in stored if not wanted.isdisjoint(terms(value))]


def _members(column: pd.Series, criterion: Criterion) -> np.ndarray:
    """Which rows hold one of the criterion's values: labels compared as text, the rest as stored."""
    if criterion.column in BOOLEAN_COLUMNS or criterion.column in CELL_STATS:
        return column.isin(list(criterion.values)).to_numpy()
    if criterion.column in MULTI_VALUED_COLUMNS:
        return _term_members(column, criterion.values)
    return column.astype(str).isin([str(v) for v in criterion.values]).to_numpy()


def _term_members(column: pd.Series, values: tuple) -> np.ndarray:
    """Which rows hold one of the values among their terms: each category is split once, not each row."""
    column = column.astype("category")
    categories = column.cat.categories.astype(str)
    hit = categories.isin(holding_any(categories, values))
    return np.append(hit, False)[column.cat.codes.to_numpy()]  # code -1 (a missing value): no hit


def _compare(values: np.ndarray, op: str, threshold) -> np.ndarray:
    return {
        "==": values == threshold,
        ">": values > threshold,
        ">=": values >= threshold,
        "<": values < threshold,
        "<=": values <= threshold,
    }[op]


def _literal(value: Any) -> str:
    """A value as a filter literal: `repr` quotes and escapes, so no value can change the filter."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return repr(value)
    return repr(str(value))


def value_filter(
    criteria: list[Criterion],
    dataset_ids: list[str] | None = None,
    stored: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Backend (c): a SOMA `value_filter` (no `not` in the grammar: `not_in` becomes chained `!=`).

    The grammar has no `contains`: a criterion on a multi-valued column becomes the values the store holds
    in it (`stored`, column -> values) that have a wanted term.
    """
    clauses = []
    if dataset_ids is not None and not dataset_ids:
        return NO_CELL  # no dataset: no cell
    if dataset_ids is not None:
        clauses.append(f"dataset_id in [{', '.join(_literal(d) for d in dataset_ids)}]")
    for c in criteria:
        clauses.append(_clause(_as_stored(c, stored or {})))
    return " and ".join(f"({clause})" for clause in clauses) if clauses else EVERY_CELL


def _as_stored(criterion: Criterion, stored: Mapping[str, Sequence[str]]) -> Criterion:
    """A criterion on a multi-valued column as the stored values it matches; any other, as it is."""
    if criterion.column not in MULTI_VALUED_COLUMNS:
        return criterion
    if criterion.column not in stored:
        raise ValueError(f"value_filter: {criterion.column} is multi-valued; pass the values the store holds")
    matching = holding_any(stored[criterion.column], criterion.values)
    return Criterion(criterion.column, criterion.op, tuple(matching))


def _clause(c: Criterion) -> str:
    if c.op in ("in", "not_in") and not c.values:  # no stored value matches
        return NO_CELL if c.op == "in" else EVERY_CELL
    if c.op == "in" and not all(isinstance(v, str) for v in c.values):  # the engine's `in` takes no
        # booleans and no negative numbers
        return " or ".join(f"{c.column} == {_literal(v)}" for v in c.values)
    if c.op == "in":
        return f"{c.column} in [{', '.join(_literal(v) for v in c.values)}]"
    if c.op == "not_in":
        return " and ".join(f"{c.column} != {_literal(v)}" for v in c.values)
    return f"{c.column} {c.op} {_literal(c.values[0])}"
