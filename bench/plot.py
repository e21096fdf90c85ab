"""B1's cost as a function of size: wall time and peak memory of the loop and the pipeline at each scale."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

WAYS = {"baseline": ("the seed guide's loop", "tab:red"), "ours": ("the pipeline (--cores 2)", "tab:blue")}
MEASURES = {"seconds": "wall time (s)", "peak_rss_mib": "peak memory, largest process (MiB)"}


def plot_scales(rows: list[dict], out: Path) -> None:
    """Two panels over the GB of h5ad the query matches (log scales), one line per way; `rows` are B1's
    figures at each scale (`bench.run.pipeline_vs_loop`)."""
    rows = sorted(rows, key=lambda b: b["matched_gb"])
    sizes = [b["matched_gb"] for b in rows]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for axis, (measure, label) in zip(axes, MEASURES.items(), strict=True):
        for way, (name, colour) in WAYS.items():
            axis.plot(sizes, [b[way][measure] for b in rows], "o-", color=colour, label=name)
        for size, b in zip(sizes, rows, strict=True):
            label_at = (size, b["baseline"][measure])
            axis.annotate(b["scale"], label_at, textcoords="offset points", xytext=(4, 4))
        axis.set(xscale="log", yscale="log", xlabel="h5ad matched by the query (GB)", ylabel=label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle("B1 at each scale: cost against the data a query touches")
    figure.savefig(out, metadata={"Date": None})  # no timestamp: the same figures give the same file
    plt.close(figure)
