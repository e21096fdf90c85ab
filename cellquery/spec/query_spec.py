"""The YAML query spec: load, validate against its JSON Schema, normalise, digest."""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cellquery.cellxgene import ontology
from cellquery.cellxgene.release import tissue_types
from cellquery.errors import SpecError, UserError
from cellquery.files.layout import build_file_named
from cellquery.spec import limits

if TYPE_CHECKING:
    import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schemas" / "query.schema.yaml"

# Ontology-backed obs columns: label column -> (id column, bionty registry, artifact link).
ONTOLOGY_COLUMNS = {
    "assay": ("assay_ontology_term_id", "ExperimentalFactor", "experimental_factors"),
    "cell_type": ("cell_type_ontology_term_id", "CellType", "cell_types"),
    "development_stage": ("development_stage_ontology_term_id", "DevelopmentalStage", "developmental_stages"),
    "disease": ("disease_ontology_term_id", "Disease", "diseases"),
    "self_reported_ethnicity": ("self_reported_ethnicity_ontology_term_id", "Ethnicity", "ethnicities"),
    "sex": ("sex_ontology_term_id", "Phenotype", "phenotypes"),
    "tissue": ("tissue_ontology_term_id", "Tissue", "tissues"),
}
ID_COLUMNS = {id_column: label for label, (id_column, _, _) in ONTOLOGY_COLUMNS.items()}
# Id columns whose value may join several terms (CELLxGENE schema 7: `MONDO:0005015 || MONDO:0005148`, the
# label column likewise; schema 5.x joined a donor's ethnicities with commas:
# `HANCESTRO:0005,HANCESTRO:0014`); a cell matches each of its terms. No ontology term id holds either.
MULTI_VALUED_COLUMNS = {"disease_ontology_term_id", "self_reported_ethnicity_ontology_term_id"}
TERM_SEPARATOR = " || "
TERM_SEPARATORS = re.compile(r" \|\| |,")
# Label-backed string columns: column -> ULabel type linked to artifacts (donor_id is a plain string
# feature in the CELLxGENE curator's schema: no labels).
ULABEL_COLUMNS = {"suspension_type": "SuspensionType"}
STRING_COLUMNS = {"suspension_type", "donor_id", "tissue_type", "observation_joinid", "dataset_id"}
BOOLEAN_COLUMNS = {"is_primary_data"}
# Per-cell statistics the Census stores; the h5ad route computes them the same way when a query uses them.
CELL_STATS = {"raw_sum", "nnz", "raw_mean_nnz", "raw_variance_nnz", "n_measured_vars"}
INTEGER_STATS = {"nnz", "n_measured_vars"}  # int64 in the census; the others are float64
KEY_COLUMNS = ("dataset_id", "observation_joinid")  # a cell of the result, in either route
QUERYABLE = set(ONTOLOGY_COLUMNS) | set(ID_COLUMNS) | STRING_COLUMNS | BOOLEAN_COLUMNS | CELL_STATS
DEFAULT_OBS_COLUMNS = (
    *[c for label, (id_column, _, _) in ONTOLOGY_COLUMNS.items() for c in (label, id_column)],
    "donor_id",
    "is_primary_data",
    "suspension_type",
    "tissue_type",
)

CENSUS_OBS_COLUMNS = {*DEFAULT_OBS_COLUMNS, *QUERYABLE, *ontology.GENERAL_TISSUE_COLUMNS}
# The obs columns a CELLxGENE-schema dataset must hold (submission format; `cellquery.outputs.submission`)
SCHEMA_OBS_COLUMNS = (
    *[id_column for id_column, _, _ in ONTOLOGY_COLUMNS.values()],
    "donor_id",
    "is_primary_data",
    "suspension_type",
    "tissue_type",
)

# Bump when slices change shape (2: slices keep the columns the inclusion rules read; 3: a file of another
# organism gives no cells; 5: a schema 5 file gives only the cells of the query's organism), so old ones
# are remade.
SLICE_FORMAT = 5
# Characters no key or value of a spec holds: control, format (invisible), surrogate, private, unassigned
MAX_NAMED = 10  # unknown values of one key, each named with a suggestion; the rest are counted
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
INT64 = (-(2**63), 2**63 - 1)
# results/census/census.h5ad would be both the result and the census route's slice
RESERVED_NAMES = {"census"}


def terms(value: str) -> list[str]:
    """The terms of a multi-valued column's value, joined as either schema generation joins them (a single
    value is one term)."""
    return TERM_SEPARATORS.split(value)


class Problems:
    """Collects the problems of independent checks, so that one run reports them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except SpecError as error:
            self.found += error.problems
        except UserError as error:  # a problem of one spec's source: the others are still checked
            self.found.append(str(error))

    def add(self, problem: str) -> None:
        self.found.append(problem)

    def raise_any(self) -> None:
        if self.found:
            raise SpecError(*dict.fromkeys(self.found))


@dataclass(frozen=True)
class QuerySpec:
    """A validated query spec with defaults filled in; `digest` identifies its content."""

    path: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def source(self) -> dict[str, Any]:
        return self.data["source"]

    @property
    def instance(self) -> str:
        return self.source["instance"]

    @property
    def organism(self) -> str:
        """The organism as an NCBITaxon id."""
        return organism_id(self.data["organism"])

    @property
    def cells(self) -> dict[str, Any]:
        return self.data["cells"]

    @property
    def artifacts(self) -> dict[str, Any]:
        return self.data["artifacts"]

    @property
    def genes(self) -> list[str] | None:
        return self.data.get("genes")

    @property
    def obs_columns(self) -> list[str]:
        """The result's obs columns beside the keys (`schema: cellxgene` adds those the schema needs)."""
        columns = self.data.get("obs_columns") or list(DEFAULT_OBS_COLUMNS)
        required = SCHEMA_OBS_COLUMNS if self.schema == "cellxgene" else ()
        return [*dict.fromkeys([*columns, *required])]

    @property
    def allow_empty(self) -> bool:
        return self.data.get("allow_empty", False)

    @property
    def fetch(self) -> str | None:
        """How artifacts in object storage are read (`auto`, `cache`, `stream`); None: the config's choice."""
        return self.data.get("fetch")

    @property
    def layers(self) -> list[str]:
        return self.data["output"].get("layers", [])

    @property
    def formats(self) -> list[str]:
        """The files of the result: the h5ad (always), then those asked for."""
        return [*dict.fromkeys(["h5ad", *self.data["output"].get("formats", [])])]

    @property
    def export_formats(self) -> list[str]:
        """The formats written beside the h5ad (`zarr`, `obs_parquet`), in the spec's order."""
        return [fmt for fmt in self.formats if fmt != "h5ad"]

    @property
    def schema(self) -> str | None:
        return self.data["output"].get("schema")

    @property
    def hvg(self) -> dict | None:
        return self.data["output"].get("hvg")

    @property
    def sample(self) -> dict | None:
        """The sample to draw (`seed` filled in), or None for every selected cell."""
        sample = self.data.get("sample")
        return {"seed": 0, **sample} if sample else None

    @property
    def author_columns(self) -> list[str]:
        """Columns of `obs_columns` only the source h5ads hold (the census does not)."""
        return [column for column in self.obs_columns if column not in CENSUS_OBS_COLUMNS]

    @property
    def slice_obs_columns(self) -> list[str]:
        """What a slice keeps beside the keys: `obs_columns` and the columns a sample groups by."""
        return [*dict.fromkeys([*self.obs_columns, *(self.sample or {}).get("per", [])])]

    @property
    def output_key(self) -> str:
        return self.data["output"].get("key") or f"cellquery/{self.name}.h5ad"

    @property
    def continues(self) -> str | None:
        """The query whose results under the output key this spec adds versions to (`output.continues`)."""
        return self.data["output"].get("continues")

    @property
    def gene_join(self) -> str:
        return self.data["output"]["gene_join"]

    @property
    def digest(self) -> str:
        return digest_of(self.data)

    @property
    def cells_digest(self) -> str:
        """What a per-dataset slice depends on (not the collection version), and the slices' format."""
        keys = ("organism", "cells", "genes")
        shape = {"obs_columns": self.slice_obs_columns, "layers": self.layers}
        return digest_of({"slice_format": SLICE_FORMAT, **{k: self.data.get(k) for k in keys}, **shape})


def digest_of(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def organism_id(value: str) -> str:
    """`Homo sapiens`, `human` or `NCBITaxon:9606` -> `NCBITaxon:9606`."""
    names = {
        term_id: (*names, *ontology.ORGANISM_ALIASES.get(term_id, ()))
        for term_id, names in ontology.ORGANISMS.items()
    }
    for term_id, spellings in names.items():
        if value == term_id or value.lower() in {n.lower() for n in spellings}:
            return term_id
    choices = [name for spellings in names.values() for name in spellings]
    raise SpecError(f"organism: unknown organism {value!r}{suggest(value, choices)}")


def unknown_values(key: str, unknown: list, describe) -> SpecError:
    """The error for unknown values of one key: the first `MAX_NAMED` each on a line of its own, described
    (with a suggestion: costly), the rest counted on one line."""
    lines = [f"{key}: {describe(value)}" for value in unknown[:MAX_NAMED]]
    rest = unknown[MAX_NAMED:]
    if rest:
        among = ", ".join(map(repr, rest[:3]))
        lines.append(f"{key}: {len(rest):,} more unknown values ({among}, ...)")
    return SpecError(*lines)


def suggest(value: str, choices, aliases: dict[str, str] | None = None) -> str:
    """`; did you mean 'X'?` for the closest choice: by case, as a word it starts, then by spelling.

    `aliases` maps other names (synonyms) to the choice they stand for.
    """
    close = closest(str(value), [str(c) for c in choices], aliases or {})
    return f"; did you mean {close!r}?" if close else ""


def closest(value: str, choices: list[str], aliases: dict[str, str]) -> str | None:
    by_lower = {c.lower(): c for c in choices} | {a.lower(): c for a, c in aliases.items()}
    wanted = value.lower().strip()
    if wanted in by_lower:
        return by_lower[wanted]
    starting = sorted((n for n in by_lower if wanted and n.startswith(wanted)), key=len)
    if len(wanted) >= 3 and starting:
        return by_lower[starting[0]]
    slip = one_slip(wanted, by_lower) if len(wanted) >= 3 else None
    if slip:
        return by_lower[slip]
    close = difflib.get_close_matches(wanted, list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


# What a comparison is written as elsewhere (`{">=": 300}`), for a suggestion of the key a spec takes
COMPARISON_SYMBOLS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "=>": "ge", "=<": "le"}
SLIP_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789-_. "


def one_slip(word: str, known) -> str | None:
    """A known name one typing slip from `word`, the likeliest slip first: two neighbours swapped (SFTCP,
    SFTPC), one character wrong, one missing, one extra."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    swapped = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    wrong = [a + c + b[1:] for a, b in splits if b for c in SLIP_CHARACTERS]
    missing = [a + c + b for a, b in splits for c in SLIP_CHARACTERS]
    extra = [a + b[1:] for a, b in splits if b]
    for candidates in (swapped, wrong, missing, extra):
        found = sorted({c for c in candidates if c != word and c in known})
        if found:  # several slips alike: the most similar, as difflib ranks them
            return difflib.get_close_matches(word, found, n=1, cutoff=0)[0]
    return None


@cache
def _validator() -> type:
    """JSON Schema's validator but for integers, which include 1.0 and 1e308 there: a spec's are whole
    numbers written as such. (jsonschema imported here: jobs unpickle specs, they do not check them.)"""
    import jsonschema

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
        ),
    )


@cache
def _schema() -> dict:
    """The query schema, read once per process."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def is_instance_name(value: object) -> bool:
    """Whether `value` names a source instance as `source.instance` may (demo, atlas:<name>, owner/name)."""
    pattern = _schema()["properties"]["source"]["properties"]["instance"]["pattern"]
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def dates_as_text(value: Any) -> Any:
    """YAML reads `version: 2025-01-30` as a date; a spec means the text."""
    if isinstance(value, dict):
        return {k: dates_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [dates_as_text(v) for v in value]
    return value.isoformat() if isinstance(value, datetime.date) else value


def _value_problems(value: Any, where: str = "(top level)") -> list[str]:
    """Numbers no engine compares (non-finite, or past 64 bits) and text with invisible characters,
    anywhere in the spec."""
    if isinstance(value, dict):
        return [
            problem
            for key, item in value.items()
            for problem in (*_text_problems(key, where), *_value_problems(item, _joined(where, key)))
        ]
    if isinstance(value, list):
        return [problem for item in value for problem in _value_problems(item, where)]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: {value} is not a finite number"]
    if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        return [f"{where}: {value} does not fit in 64 bits, as every number of a spec must"]
    return _text_problems(value, where) if isinstance(value, str) else []


def _joined(where: str, key: str) -> str:
    return key if where == "(top level)" else f"{where}.{key}"


def _text_problems(text: str, where: str) -> list[str]:
    """A control, format (invisible), surrogate, private or unassigned character in a key or value."""
    bad = next((ch for ch in text if unicodedata.category(ch) in HIDDEN_CATEGORIES), None)
    if bad is None:
        return []
    name = unicodedata.name(bad, "a control character")
    return [f"{where}: {text!r} holds U+{ord(bad):04X} ({name}), which no name contains; remove it"]


def _fill_defaults(data: dict) -> dict:
    data.setdefault("source", {})
    data["source"].setdefault("instance", "demo")
    data["source"].setdefault("collection", "cellxgene-census")
    data.setdefault("artifacts", {})
    data.setdefault("cells", {})
    data.setdefault("output", {})
    data["output"].setdefault("gene_join", "inner")
    return data


def _misplaced(key: str, where: str) -> str:
    """`; 'X' is a top-level key ...` for a key written under a section it does not belong to."""
    if where != "(top level)" and key in _schema().get("properties", {}):
        return f"; {key!r} is a top-level key: move it out of {where!r}"
    return ""


def _how_far(error: jsonschema.ValidationError) -> tuple[int, bool]:
    """Deeper is further; at one depth, an alternative of the right type is further than a type mismatch."""
    return len(list(error.absolute_path)), error.validator not in ("type", "oneOf")


def _schema_errors(error: jsonschema.ValidationError) -> list[str]:
    """One line per problem of a schema error: unknown keys with a suggestion, else the schema's message."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    path = list(error.absolute_path)
    if len(path) == 3 and path[0] == "cells" and isinstance(error.instance, dict):  # [a, {descendants_of: b}]
        return [
            f"{where}: a list holds values only; {{descendants_of: [a, b]}} takes terms with their "
            f"descendants (cells.{path[1]}: one criterion: a value, a list of values, or such a mapping)"
        ]
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        if allowed and unknown:
            return [
                f"{where}: unknown key {key!r}{suggest(key, allowed) or _misplaced(key, where)}"
                for key in unknown
            ]
    if error.validator == "oneOf" and error.context:
        unknown = _keys_no_alternative_knows(error)
        if unknown:
            return [
                f"{where}: unknown key {key!r}{suggest(key, known, COMPARISON_SYMBOLS)}"
                for key, known in unknown
            ]
        return _schema_errors(max(error.context, key=_how_far))  # the alternative that got furthest
    return [f"{where}: {error.message}"]


def _one_per_value(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """One error per value the schema refuses (`gene_join: null` fails both `type` and `enum`: the choices
    say more); a mapping's unknown keys and missing keys are problems of their own."""
    chosen: dict[tuple, jsonschema.ValidationError] = {}
    for error in errors:
        kind = error.validator if error.validator in ("additionalProperties", "required") else "value"
        place = (tuple(map(str, error.absolute_path)), kind)
        if place not in chosen or error.validator == "enum":
            chosen[place] = error
    return list(chosen.values())


def _misspelt(error: jsonschema.ValidationError) -> bool:
    """A required key missing because it was misspelt: the unknown key's suggestion says it already."""
    if error.validator != "required" or not isinstance(error.instance, dict):
        return False
    missing = [key for key in error.validator_value if key not in error.instance]
    allowed = list(error.schema.get("properties", {}))
    return all(any(closest(str(k), allowed, {}) == m for k in error.instance) for m in missing)


def _keys_no_alternative_knows(error: jsonschema.ValidationError) -> list[tuple[str, list[str]]]:
    """Keys of a mapping no alternative of a `oneOf` allows, each with the keys some alternative allows."""
    if not isinstance(error.instance, dict):
        return []
    alternatives = [s for s in error.validator_value if s.get("type") == "object"]
    known = [key for s in alternatives for key in s.get("properties", {})]
    return [(key, known) for key in sorted(error.instance) if known and key not in known]


def _check_cells(cells: dict, skip=()) -> None:
    """Every criterion's problems (columns in `skip` already failed the schema)."""
    problems = Problems()
    for column, criterion in cells.items():
        with problems.check():
            if column in skip:
                continue
            _check_criterion(column, criterion)
    problems.raise_any()


def _check_criterion(column: str, criterion: Any) -> None:
    if column not in QUERYABLE:
        raise SpecError(f"cells.{column}: unknown obs column{suggest(column, sorted(QUERYABLE))}")
    comparison = isinstance(criterion, dict) and not {"not_in", "descendants_of"} & set(criterion)
    if comparison:
        _check_comparison(column, criterion)
    ontology_column = column in ONTOLOGY_COLUMNS or column in ID_COLUMNS
    if descends(criterion) and not ontology_column:
        raise SpecError(f"cells.{column}: descendants_of applies to ontology columns only")
    values = criterion if isinstance(criterion, list) else [criterion]
    if isinstance(criterion, dict) and "not_in" in criterion:
        values = criterion["not_in"] if isinstance(criterion["not_in"], list) else []
    if column in CELL_STATS:
        _check_numbers(column, list(criterion.values()) if comparison else values, whole=not comparison)
    if column in BOOLEAN_COLUMNS and not all(isinstance(v, bool) for v in values):
        raise SpecError(f"cells.{column}: {criterion!r} is not true or false")
    if (
        column == "tissue_type"
    ):  # each release's own names are checked in resolve (`cellquery.cellxgene.release`)
        listed = criterion["not_in"] if isinstance(criterion, dict) else values
        named = tissue_types()
        for value in listed:
            if value not in named:
                known = suggest(value, named)
                raise SpecError(f"cells.tissue_type: unknown value {value!r}{known}")


def descends(criterion: Any) -> bool:
    """Whether a criterion takes ontology descendants: `{descendants_of: X}` or `{not_in: {descendants_of:
    X}}`."""
    if not isinstance(criterion, dict):
        return False
    return "descendants_of" in criterion or isinstance(criterion.get("not_in"), dict)


def _check_numbers(column: str, values: list, whole: bool) -> None:
    """Numbers the census column holds: any finite float, or a 64-bit integer (a whole one to equal it)."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"cells.{column}: {value!r} is not a number")
        if column not in INTEGER_STATS:
            continue
        if not INT64[0] <= value <= INT64[1]:
            raise SpecError(f"cells.{column}: {value!r} lies beyond the 64-bit integers {column} holds")
        if whole and value != int(value):
            raise SpecError(f"cells.{column}: {value!r} is never equal to {column}, a whole number")


def _check_comparison(column: str, bounds: dict) -> None:
    """Numeric comparisons apply to the per-cell statistics, and their bounds must leave some room."""
    if column not in CELL_STATS:
        raise SpecError(f"cells.{column}: numeric comparisons apply to {', '.join(sorted(CELL_STATS))}")
    lows = [(value, op == "gt") for op, value in bounds.items() if op in ("gt", "ge")]
    highs = [(value, op == "lt") for op, value in bounds.items() if op in ("lt", "le")]
    room = all(
        lo < hi or (lo == hi and not (open_lo or open_hi)) for lo, open_lo in lows for hi, open_hi in highs
    )
    if not room:
        raise SpecError(f"cells.{column}: contradictory bounds {bounds!r}: no value satisfies them all")


def _check_obs_columns(columns: list[str]) -> None:
    """Any column may be kept, but the per-cell statistics: only the census stores them."""
    stats = [column for column in columns if column in CELL_STATS]
    if stats:
        raise SpecError(
            *(
                f"obs_columns: {c!r} is a per-cell statistic only the census stores; query by it in cells:"
                for c in stats
            )
        )


def _check_sample(sample: dict) -> None:
    problems = Problems()
    if not {"max_cells", "fraction"} & set(sample):
        problems.add("sample: give max_cells (at most how many cells), fraction (the share kept), or both")
    elif "per" in sample and "max_cells" not in sample:
        problems.add("sample.per: needs max_cells, the number of cells each value keeps at most")
    for column in sample.get("per", []):
        if column not in QUERYABLE:
            known = sorted(QUERYABLE - CELL_STATS)
            problems.add(f"sample.per: {column!r} is not a column both routes hold{suggest(column, known)}")
    problems.raise_any()


def _check_output(output: dict, obs_columns: list[str] | None) -> None:
    """The key must be a path inside the storage; `hvg.batch_key` must be a column the result keeps."""
    if "key" in output and (problem := key_shape_problem(output["key"])):
        raise SpecError(
            f"output.key: {output['key']!r} {problem}; write a relative path such as cellquery/x.h5ad"
        )
    batch_key = output.get("hvg", {}).get("batch_key")
    kept = [*KEY_COLUMNS, *(obs_columns or DEFAULT_OBS_COLUMNS)]
    if batch_key and batch_key not in kept:
        raise SpecError(
            f"output.hvg.batch_key: {batch_key!r} is not a column the result keeps (obs_columns)"
            f"{suggest(batch_key, kept)}"
        )


def key_shape_problem(key: str) -> str | None:
    """What makes a key no path inside an instance's storage, beyond lamindb's own rules (which take these
    and store them as given): a URL scheme or drive letter, a home folder, an empty segment, lamindb's
    managed folder."""
    segments = key.split("/")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", key):
        return "starts like a URL or a drive letter"
    if key.startswith("~"):
        return "starts like a home folder"
    if "" in segments:
        return "has an empty segment (two slashes in a row)"
    if segments[0] == ".lamindb":
        return "lies in .lamindb/, the folder lamindb manages itself"
    return None


class _UniqueKeyLoader(yaml.CSafeLoader):
    """A YAML loader whose keys are text, each given once (plain YAML keeps the last silently and reads
    `yes`, `1` or `2025-01-30` as other types)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise SpecError(
                    f"{key_node.value}: a key YAML reads as {type(key).__name__}, not text (line {line}); "
                    "quote it"
                )
            if key in seen:
                raise SpecError(f"{key}: key given twice (line {line}): keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The spec file's content, once it is known to lie within the bounds of a spec
    (`cellquery.spec.limits`)."""
    try:
        limits.check_file_size(path)
        text = path.read_bytes().decode("utf-8")
        limits.check_shape(text)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"invalid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(
            f"not UTF-8 text: byte {error.object[error.start]:#04x} at offset {error.start}"
        ) from None
    except OSError as error:
        raise SpecError(f"cannot read the file: {error.strerror}") from None


def _validated(data: Any) -> dict:
    """The spec with defaults filled in; raises one `SpecError` with every problem found."""
    if not isinstance(data, dict):
        raise SpecError(f"a query spec is a mapping of keys, got {type(data).__name__}")
    data = dates_as_text(data)
    value_problems = _value_problems(data)
    if value_problems:  # values no consumer takes: the schema's view of them would only repeat it
        raise SpecError(*dict.fromkeys(value_problems))
    errors = list(_validator()(_schema()).iter_errors(data))
    problems = Problems()
    problems.found += _problem_lines(errors)
    malformed = {tuple(error.absolute_path)[:2] for error in errors}
    malformed_keys = {path[0] for path in malformed if path}
    checks = {  # each runs on a part of the spec the schema accepted
        "organism": lambda: organism_id(data["organism"]),
        "cells": lambda: _check_cells(data["cells"], skip={p[1] for p in malformed if p[:1] == ("cells",)}),
        "obs_columns": lambda: _check_obs_columns(data["obs_columns"]),
        "sample": lambda: _check_sample(data["sample"]),
        "output": lambda: _check_output(data["output"], data.get("obs_columns")),
        "artifacts": lambda: _check_size(data["artifacts"].get("size", {})),
        "name": lambda: _check_name(data["name"]),
    }
    reads = {"output": {"obs_columns"}}  # a check that reads another key needs it well-formed too
    for key, check in checks.items():
        accepted = ("cells",) not in malformed if key == "cells" else key not in malformed_keys
        if key in data and accepted and not reads.get(key, set()) & malformed_keys:
            with problems.check():
                check()
    problems.raise_any()
    return _fill_defaults(data)


def _problem_lines(errors: list[jsonschema.ValidationError]) -> list[str]:
    """One line per problem the schema found, in the document's order (unknown keys with a suggestion)."""
    ordered = sorted(_one_per_value(errors), key=lambda e: list(map(str, e.absolute_path)))
    return [line for error in ordered if not _misspelt(error) for line in _schema_errors(error)]


def document_problems(data: Any, schema: dict) -> list[str]:
    """A YAML document's problems against its schema, checked as a spec's are (the workflow's config): values
    no consumer takes (non-finite, past 64 bits, invisible characters), else the schema's; one line each."""
    if problems := _value_problems(data):
        return list(dict.fromkeys(problems))
    return _problem_lines(list(_validator()(schema).iter_errors(data)))


def _check_name(name: str) -> None:
    if name in RESERVED_NAMES:
        raise SpecError(f"name: {name!r} would name the result like the census route's file; choose another")
    if taken := build_file_named(name):
        raise SpecError(f"name: {name!r} is the name of the build's own {taken}; choose another")


def _check_size(size: dict) -> None:
    if size.get("min", 0) > size.get("max", float("inf")):
        raise SpecError(f"artifacts.size: min {size['min']} is larger than max {size['max']}")


def spec_of(data: dict, path: Path) -> QuerySpec:
    """A spec given as data rather than read from a file (`path` names it), validated as a file's is."""
    return QuerySpec(path=path, data=_validated(data))


def file_kind(path: Path) -> str:
    """What a path that is no regular file is (a FIFO would block a read)."""
    kinds = {"is_dir": "directory", "is_fifo": "FIFO", "is_socket": "socket", "is_char_device": "device"}
    return next((kind for test, kind in kinds.items() if getattr(path, test)()), "special file")


def load_spec(path: str | Path) -> QuerySpec:
    """Read and validate a query spec; raises `SpecError` with one line: the file, the key, the value."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"query: no such file {str(path)!r}")
    if not path.is_file():
        raise SpecError(f"query: {str(path)!r} is a {file_kind(path)}, not a spec file")
    try:
        return QuerySpec(path=path, data=_validated(read_yaml(path)))
    except SpecError as error:
        raise error.within(str(path)) from None
