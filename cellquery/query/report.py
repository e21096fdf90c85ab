"""The figures and pages `snakemake --report` shows: what a run matched, built, validated and registered."""

from __future__ import annotations

import html
import json
import logging
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from cellquery.files.atomic import atomic_path
from cellquery.files.h5ad import read_frame
from cellquery.instances.target import Target
from cellquery.query.census_route import query_filter
from cellquery.query.runfiles import read_manifest, read_query
from cellquery.query.validate import unchecked
from cellquery.workflow.faults import failpoint
from cellquery.workflow.jobs import at_work

log = logging.getLogger(__name__)

BAR_COLOR = "#1f6fb2"
MAX_BARS = 30  # more categories than this: the largest ones, then one bar for the rest
MAX_LISTED = 50  # rows of a lineage list shown before "and N more"
FIGURES = {
    "dataset_id": "Cells per dataset",
    "cell_type": "Cells per cell type",
    "tissue": "Cells per tissue",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1c2430; background: #fff; }
h1 { font-size: 1.3rem; } h2 { font-size: 1.05rem; margin-top: 1.6rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid #d5dbe3; padding: 0.25rem 0.7rem; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f3f5f8; padding: 0.8rem; font-size: 0.8rem; white-space: pre-wrap; }
.passed { color: #17703a; font-weight: 600; } .failed { color: #b3261e; font-weight: 600; }
"""


def top_counts(counts: pd.Series) -> pd.Series:
    """Counts largest first, the tail beyond `MAX_BARS` folded into one "other" entry."""
    counts = counts[counts > 0].sort_values(ascending=False)
    if len(counts) <= MAX_BARS:
        return counts
    head, tail = counts.iloc[: MAX_BARS - 1], counts.iloc[MAX_BARS - 1 :]
    return pd.concat([head, pd.Series({f"other ({len(tail)})": tail.sum()})])


def bar_chart(counts: pd.Series, title: str, out: Path, empty: str = "no cells") -> None:
    """A horizontal bar chart of cell counts as SVG, each bar labelled with its count (`empty`: no bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = top_counts(counts).iloc[::-1]  # largest on top
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.32 * max(len(counts), 1)))
    if counts.empty:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    else:
        bars = ax.barh([str(label) for label in counts.index], counts.to_numpy(), color=BAR_COLOR)
        ax.bar_label(bars, labels=[f"{n:,}" for n in counts], padding=3, fontsize=8)
        ax.margins(x=0.12)
    ax.set_title(f"{title} ({int(counts.sum()):,} cells)")
    ax.set_xlabel("cells")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="svg")
    plt.close(fig)


def page(title: str, *sections: str) -> str:
    """A self-contained HTML page (inline style, no external resources)."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )


def table(frame: pd.DataFrame) -> str:
    """An HTML table; numeric columns right-aligned with thousands separators."""
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool for c in frame.columns]
    head = "".join(
        f'<th class="{"num" if n else ""}">{html.escape(str(c))}</th>'
        for c, n in zip(frame.columns, numeric, strict=True)
    )
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{v:,}</td>' if n else f"<td>{html.escape(readable(v))}</td>"
            for v, n in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def readable(value) -> str:
    """A table cell's text: timestamps to the second, nothing for a missing value."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def section(heading: str, body: str) -> str:
    return f"<h2>{html.escape(heading)}</h2>{body}"


def spec_page(query: dict, n_datasets: int) -> str:
    """The spec as given, its digest, and what it compiled to for the census store."""
    census_filter = f"{query_filter(query)}\n\nand dataset_id in the {n_datasets:,} matched datasets"
    return page(
        f"Query {query['name']}",
        section("Spec", f"<pre>{html.escape(yaml.safe_dump(query['spec'], sort_keys=False))}</pre>"),
        section("Spec digest", f"<pre>{query['spec_digest']}</pre>"),
        section("Census value_filter", f"<pre>{html.escape(census_filter)}</pre>"),
        section(
            "Source",
            table(
                pd.DataFrame(
                    {
                        "collection": [query["collection"]["key"]],
                        "version": [query["collection"]["version"]],
                        "artifacts in collection": [query["collection"]["artifacts"]],
                        "census store": [query["census"]["key"]],
                    }
                )
            ),
        ),
    )


def datasets_page(manifest: pd.DataFrame, validation: dict) -> str:
    """The matched datasets: their files, sizes and the cells each route took from them."""
    routes = pd.DataFrame(validation["per_dataset"], columns=["uid", "h5ad_cells", "census_cells"])
    rows = manifest.merge(routes, on="uid", how="left").fillna({"h5ad_cells": 0, "census_cells": 0})
    rows = rows.astype({"size": "int64", "n_obs": "int64"})  # an empty manifest reads as text
    rows = rows.assign(size_mb=(rows["size"] / 1e6).round(1))
    columns = ["title", "dataset_id", "key", "version", "uid", "size_mb", "n_obs"]
    shown = rows[[*columns, "h5ad_cells", "census_cells"]]
    shown = shown.astype({"h5ad_cells": int, "census_cells": int})
    with_cells = int((shown["h5ad_cells"] > 0).sum())
    return page(
        f"{len(rows)} datasets matched ({with_cells} with selected cells), "
        f"{rows['size'].sum() / 1e6:,.1f} MB",
        table(
            shown.rename(
                columns={
                    "size_mb": "size (MB)",
                    "n_obs": "cells in file",
                    "h5ad_cells": "cells selected",
                    "census_cells": "census cells",
                }
            )
        ),
    )


def validation_page(validation: dict) -> str:
    """Both routes side by side: totals and cells per dataset."""
    totals = validation["totals"]
    status = validation["status"]
    summary = pd.DataFrame(
        {
            "route": ["h5ad (slices)", "census (SOMA store)"],
            "cells": [totals["h5ad_cells"], totals["census_cells"]],
            "genes": [totals["h5ad_genes"], totals["census_genes"]],
        }
    )
    verdict = (
        f'<p>Status: <span class="{status}">{status}</span>. {totals["matched_cells"]:,} cells matched '
        f"one to one; {totals['genes_compared']:,} genes compared value by value{unchecked(totals)}.</p>"
    )
    per_dataset = pd.DataFrame(validation["per_dataset"])
    return page(
        "Validation: h5ad route against census route",
        verdict,
        section("Totals", table(summary)),
        section("Per dataset", table(per_dataset)),
        section("Beyond the raw counts", table(beyond_counts(validation))),
    )


def beyond_counts(validation: dict) -> pd.DataFrame:
    """What else the result holds and how it was checked: layers, unchecked columns, sample, HVG, schema."""
    rows = [(f"layer {layer}", how) for layer, how in validation["totals"].get("layers_compared", {}).items()]
    rows += [
        (f"obs column {column}", f"not compared: {why}")
        for column, why in validation.get("not_compared", {}).items()
    ]
    if "sample" in validation:
        rows.append(("sample", json.dumps(validation["sample"])))
    for step in ("hvg", "schema"):
        if step in validation:
            rows.append((step, json.dumps(validation[step])))
    return pd.DataFrame(
        rows or [("nothing", "the raw counts and obs columns above")], columns=["what", "how"]
    )


def records(rows: list[tuple], columns: list[str]) -> str:
    """A table of at most `MAX_LISTED` registry records, then a count of the rest."""
    shown = table(pd.DataFrame(rows[:MAX_LISTED], columns=columns))
    rest = len(rows) - MAX_LISTED
    return shown + (f"<p>and {rest:,} more</p>" if rest > 0 else "")


def lineage_page(ln, receipt: dict) -> str:
    """The registered artifact as the registry holds it: versions, run, parent run, inputs, labels."""
    artifact = ln.Artifact.get(uid=receipt["artifact_uid"])
    run = artifact.run
    parent = run.initiated_by_run
    inputs = run.input_artifacts.order_by("key")
    versions = ln.Artifact.filter(key=artifact.key).order_by("created_at")
    collections = artifact.collections.all()
    facts = pd.DataFrame(
        {
            "field": ["uid", "key", "version", "hash", "size (bytes)", "cells", "created", "stored at"],
            "value": [
                artifact.uid,
                artifact.key,
                artifact.version_tag,
                artifact.hash,
                f"{artifact.size:,}",
                f"{artifact.n_observations:,}",
                readable(artifact.created_at),
                str(artifact.path),
            ],
        }
    )
    labels = {
        "cell types": [r.name for r in artifact.cell_types.all()],
        "tissues": [r.name for r in artifact.tissues.all()],
        "features": [f"{k}={v}" for k, v in artifact.features.get_values().items()],
    }
    exports = pd.DataFrame(
        [(fmt, e["uid"], e["key"], e["version"], e["path"]) for fmt, e in receipt.get("exports", {}).items()],
        columns=["format", "uid", "key", "version", "stored at"],
    )
    return page(
        f"Registered artifact {artifact.uid}",
        section(f"Instance {ln.setup.settings.instance.slug}", table(facts)),
        section("The result in other formats (outputs of the same run)", table(exports)),
        section(
            "Versions under this key",
            records(
                list(versions.values_list("uid", "version_tag", "created_at")), ["uid", "version", "created"]
            ),
        ),
        section(
            "Run that registered it",
            records(
                [
                    (r.uid, r.transform.key, r.started_at, r.finished_at, json.dumps(r.params))
                    for r in (run, parent)
                ],
                ["run", "transform", "started", "finished", "params"],
            ),
        ),
        section(
            f"Inputs ({inputs.count():,})",
            records(list(inputs.values_list("uid", "key", "version_tag")), ["uid", "key", "version"]),
        ),
        section(
            "Collections holding it",
            records(list(collections.values_list("uid", "key", "version_tag")), ["uid", "key", "version"]),
        ),
        section(
            "Labels", table(pd.DataFrame({"kind": list(labels), "values": map(", ".join, labels.values())}))
        ),
    )


def write_page(text: str, out: Path) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(text)


def describe_run(ln, inputs: dict[str, Path], out: dict[str, str]) -> None:
    """Write every figure and page of the report.

    `inputs` names the run's files (result, query, manifest, validation, receipt); `out` maps each figure
    (an obs column of `FIGURES`) and page (spec, datasets, validation, lineage) to its path.
    """
    query = read_query(inputs["query"])
    manifest = read_manifest(inputs["manifest"])
    validation = json.loads(inputs["validation"].read_text())
    obs = read_frame(inputs["result"], "obs")
    for column, title in FIGURES.items():
        if column in obs.columns:
            bar_chart(obs[column].value_counts(), title, Path(out[column]))
        else:
            missing = f"{column} is not among the result's obs columns (spec: obs_columns)"
            bar_chart(pd.Series(dtype=int), title, Path(out[column]), empty=missing)
    failpoint("describe")  # the figures written, the pages not
    write_page(spec_page(query, len(manifest)), Path(out["spec"]))
    write_page(datasets_page(manifest, validation), Path(out["datasets"]))
    write_page(validation_page(validation), Path(out["validation"]))
    write_page(lineage_page(ln, json.loads(inputs["receipt"].read_text())), Path(out["lineage"]))


def describe(target: Target, inputs: dict[str, Path], out: dict[str, str]) -> None:
    """The report's figures and pages (`rules/report.smk`); the lineage as the target records it."""
    ln = target.connect()
    at_work()
    describe_run(ln, inputs, out)
    log.info("report figures and pages written to %s", Path(out["lineage"]).parent)
