"""B9: slicing the largest h5ad of the bench demo over S3 four ways, side by side, bytes counted by a proxy.

The ways: the seed's (`artifact.load()`: download the whole file, read it into memory, mask obs), cache then
slice out of core (`fetch: cache`), stream only the byte ranges the slice needs (`fetch: stream`), `auto`
(the plan's estimate from the census store picks one), and beside them the census route's slice of the same
cells from the S3 store (what a full validation reads a second time). Two queries: about 5% and about 60%
of the file's cells. Each way runs in its own process against the demo's SeaweedFS server through a counting
proxy.

python bench/object_storage.py WAY QUERY PROJECT ENDPOINT   (one measured way; run.py drives them)
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from pathlib import Path

SHARES = {"5%": 0.05, "60%": 0.6}
WAYS = ("seed", "cache", "stream", "auto", "census")
ORGANISM = "NCBITaxon:9606"


def setup_path(project: Path) -> Path:
    return project / "results" / "bench-b9" / "setup.json"


def write_setup(project: Path) -> None:
    """The largest artifact's manifest row, the census store, and per query the cell types selecting
    about its share of the file's cells (a few contiguous runs: the file keeps cells in cell-type order)."""
    from cellquery.files.atomic import write_json
    from cellquery.instances.demo_instance import DemoInstance
    from cellquery.instances.lamin import connect
    from cellquery.query import artifacts
    from cellquery.query.census_route import experiment, open_store, store_release

    ln = connect(DemoInstance(project, "bench", storage_kind="s3").env())
    collection = ln.Collection.filter(key="cellxgene-census", is_latest=True).first()
    artifact = collection.artifacts.filter(suffix=".h5ad").order_by("-size").first()  # of its store's release
    entry = artifacts.manifest(ln.Artifact.filter(uid=artifact.uid)).iloc[0].to_dict()
    store = artifacts.store_location(ln.Artifact.get(key=f"cell-census/{collection.version_tag}/soma"))
    store["release"] = store_release(store)[0].identity
    with open_store(store) as census:
        obs = experiment(census, store, ORGANISM).obs.read(
            column_names=["cell_type_ontology_term_id"], value_filter=f"dataset_id == '{entry['dataset_id']}'"
        )
        shares = obs.concat().to_pandas()["cell_type_ontology_term_id"].value_counts(normalize=True)
    queries = {name: _cell_types(shares, share) for name, share in SHARES.items()}
    write_json(setup_path(project), {"entry": entry, "store": store, "queries": queries})


def _cell_types(shares, share: float) -> dict:
    """The cell types (of the few a dataset holds) whose cells add up nearest to `share` of its cells."""
    shares = shares[shares > 0]
    subsets = (c for n in range(1, len(shares) + 1) for c in itertools.combinations(shares.index, n))
    types = list(min(subsets, key=lambda c: abs(shares[list(c)].sum() - share)))
    return {"cell_types": types, "share": round(float(shares[types].sum()), 4)}


def run_way(way: str, query: str, project: Path, endpoint: str) -> None:
    """One way of slicing the largest file for one query; writes what it selected beside the setup.

    Every way imports the same modules (the census reader too: the pipeline's `resolve`, where `auto`
    decides, has it loaded), so the times differ by the work alone."""
    import cellquery.query.census_route  # noqa: F401
    from cellquery.query.artifacts import remote_path
    from cellquery.spec.criteria import Criterion
    from cellquery.storage.settings import filesystem

    setup = json.loads(setup_path(project).read_text())
    entry, store = setup["entry"], setup["store"]
    criteria = [Criterion("cell_type_ontology_term_id", "in", tuple(setup["queries"][query]["cell_types"]))]
    remote = remote_path(entry)
    fs = filesystem(f"s3://{remote.split('/')[0]}?endpoint_url={endpoint}")
    out = setup_path(project).with_name(f"{query}-{way}.h5ad")
    chosen = _chosen(way, entry, store, criteria)
    if chosen == "census":
        cells = _census(store, endpoint, entry, criteria, out)
    else:
        with tempfile.TemporaryDirectory(dir=setup_path(project).parent) as scratch:
            cells = WAY_FUNCTIONS[chosen](fs, remote, entry, criteria, out, Path(scratch))
    out.with_suffix(".json").write_text(json.dumps({"way": way, "chosen": chosen, "cells": cells}))


def _chosen(way: str, entry: dict, store: dict, criteria) -> str:
    """The way that runs: the one named, or for `auto` the plan's choice (`cellquery.query.resolve`)."""
    if way != "auto":
        return way
    from cellquery.query.census_route import selected_positions
    from cellquery.storage.streaming import choose, estimated_stream_bytes

    positions = selected_positions(store, criteria, ORGANISM, [entry["dataset_id"]])[entry["dataset_id"]]
    stream = estimated_stream_bytes(int(entry["size"]), int(entry["n_obs"]), positions)
    return choose("auto", int(entry["size"]), stream)


def _seed(fs, remote, entry, criteria, out, scratch) -> int:
    """`artifact.load()`: lamindb's `cache()` downloads the whole file, then `read_h5ad` reads it all."""
    import anndata as ad

    from cellquery.spec.criteria import obs_mask

    local = scratch / "whole.h5ad"
    fs.get_file(remote, str(local))
    adata = ad.read_h5ad(local)
    selected = obs_mask(adata.obs, criteria)
    adata[selected].copy().write_h5ad(out)
    return int(selected.sum())


def _cache(fs, remote, entry, criteria, out, scratch) -> int:
    from cellquery.storage.fetch import cached_copy

    copy = cached_copy(entry, scratch / "copy.h5ad", fs, remote)
    return _slice(copy, entry, criteria, out)


def _stream(fs, remote, entry, criteria, out, scratch) -> int:
    from cellquery.storage.streaming import remote_file

    with remote_file(fs, remote) as handle:
        return _slice(handle, entry, criteria, out)


def _census(store: dict, endpoint: str, entry: dict, criteria, out: Path) -> int:
    """The census route: the same cells from the census store, its requests sent to `endpoint`."""
    from cellquery.query.census_route import census_slice
    from cellquery.storage.settings import split_root

    through = store | {"root": f"{split_root(store['root'])[0]}?endpoint_url={endpoint}"}
    counts = census_slice(
        through,
        criteria,
        organism=ORGANISM,
        dataset_ids=[entry["dataset_id"]],
        obs_columns=["cell_type"],
        gene_ids=None,
        out=out,
    )
    return counts["cells"]


def _slice(source, entry, criteria, out) -> int:
    from cellquery.cellxgene.release import releases
    from cellquery.query.slicing import slice_dataset

    counts = slice_dataset(
        source,
        criteria,
        dataset_id=entry["dataset_id"],
        organism=ORGANISM,
        release=releases()[-1],  # the latest collection's (`write_setup`)
        obs_columns=["cell_type"],
        gene_ids=None,
        out=out,
    )
    return counts["cells"]


WAY_FUNCTIONS = {"seed": _seed, "cache": _cache, "stream": _stream}


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        write_setup(Path(sys.argv[2]))
    else:
        run_way(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4])
