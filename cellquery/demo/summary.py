"""What the demo instance holds, as a dict and as the text `make run` prints."""

from __future__ import annotations

from cellquery.ingest.registry import COLLECTION_KEY


def summarise(ln) -> dict:
    """Collections and versions, datasets, cells and genes per version, census stores."""
    collections = []
    for collection in ln.Collection.filter(key=COLLECTION_KEY).order_by("created_at"):
        artifacts = collection.artifacts.all()
        collections.append(
            {
                "key": collection.key,
                "version": collection.version_tag,
                "is_latest": collection.is_latest,
                "datasets": artifacts.count(),
                "cells": sum(a.n_observations or 0 for a in artifacts),
                "uncounted": artifacts.filter(n_observations__isnull=True).count(),
            }
        )
    stores = [
        {"key": a.key, "cells": a.n_observations, "path": str(a.path)}
        for a in ln.Artifact.filter(otype="tiledbsoma").order_by("key")
    ]
    h5ads = ln.Artifact.filter(suffix=".h5ad")
    return {
        "instance": ln.setup.settings.instance.slug,
        "storage": str(ln.setup.settings.storage.root),
        "h5ad_artifacts": h5ads.count(),
        "h5ad_artifacts_latest": h5ads.filter(is_latest=True).count(),
        "users": sorted({a.created_by.handle for a in h5ads}),
        "collections": collections,
        "census_stores": stores,
    }


def as_text(summary: dict) -> str:
    lines = [
        f"instance  {summary['instance']}  (storage {summary['storage']})",
        f"h5ad artifacts  {summary['h5ad_artifacts']} "
        f"({summary['h5ad_artifacts_latest']} latest versions), created by {', '.join(summary['users'])}",
    ]
    for c in summary["collections"]:
        latest = "  latest" if c["is_latest"] else ""
        uncounted = f" ({c['uncounted']} without n_observations)" if c["uncounted"] else ""
        counts = f"{c['datasets']} datasets{uncounted}, {c['cells']:,} cells"
        lines.append(f"collection {c['key']} {c['version']}: {counts}{latest}")
    for s in summary["census_stores"]:
        lines.append(f"census store {s['key']}: {s['cells']:,} cells  {s['path']}")
    return "\n".join(lines)
