"""Training on a result: two PyTorch loaders over the same cells and a tiny classifier trained on either.

The LaminDB route serves the result's registered `Collection` through `Collection.mapped()`; the census route
streams the same cells from the Census SOMA store with `tiledbsoma_ml`: the result's own, by their join
keys, read on the result's genes in the result's order. One cell in five, chosen by its join key, is held out
on both routes alike: the classifier trains on the others for some epochs; its accuracy is measured on those.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cellquery.errors import UserError
from cellquery.files.h5ad import read_frame
from cellquery.files.layout import QueryFiles
from cellquery.query.census_route import X_NAME, obs_filter, open_store
from cellquery.query.census_route import experiment as census_experiment
from cellquery.query.runfiles import criteria_of, read_manifest, read_query

ROUTES = ("lamin", "census")
JOIN_KEYS = ["dataset_id", "observation_joinid"]
HELD_OUT = 5  # one cell in HELD_OUT is held out for the accuracy
Batches = Iterator[tuple[torch.Tensor, list[str], np.ndarray]]  # counts, labels, held-out flags


@dataclass(frozen=True)
class Result:
    """A finished run's `results/<name>/`: the resolved query, the manifest, the receipt and the h5ad."""

    path: Path

    @property
    def files(self) -> QueryFiles:
        folder = self.path.resolve()
        return QueryFiles(folder.name, folder.parent)

    @cached_property
    def query(self) -> dict:
        return read_query(self.files.query)

    @cached_property
    def receipt(self) -> dict:
        return json.loads(self.files.receipt.read_text())

    @property
    def h5ad(self) -> Path:
        return self.files.result

    @cached_property
    def dataset_ids(self) -> list[str]:
        return list(read_manifest(self.files.manifest)["dataset_id"])

    @cached_property
    def genes(self) -> pd.Index:
        return read_frame(self.h5ad, "var").index

    def obs_filter(self, obs) -> str:
        """The census route's obs `value_filter` on this census obs: the query's criteria within the
        manifest's datasets."""
        return obs_filter(obs, criteria_of(self.query), self.dataset_ids)

    def census_joinids(self, obs) -> np.ndarray:
        """The census `soma_joinid`s of the result's own cells (a sample's only): what the census route
        serves, the cells of the query the Census holds that the result holds too."""
        columns = ["soma_joinid", "dataset_id", "observation_joinid"]
        held = obs.read(column_names=columns, value_filter=self.obs_filter(obs)).concat().to_pandas()
        mine = read_frame(self.h5ad, "obs")
        keys = set(mine["dataset_id"].astype(str) + ":" + mine["observation_joinid"].astype(str))
        chosen = (held["dataset_id"].astype(str) + ":" + held["observation_joinid"].astype(str)).isin(keys)
        return np.sort(held.loc[chosen.to_numpy(), "soma_joinid"].to_numpy(dtype=np.int64))

    def classes(self, label: str) -> list[str]:
        """The label's values in the result: every route's cells carry a subset of them."""
        obs = read_frame(self.h5ad, "obs")
        if label not in obs.columns:
            columns = ", ".join(obs.columns)
            raise UserError(f"--label {label!r}: not an obs column of {self.h5ad}; it has {columns}")
        return sorted(obs[label].astype(str).unique())


def connect_result(result: Result, config: dict):
    """`lamindb` connected to the target the run registered the result in (`config`: the run's target
    keys; the embedded target of the result's project when it names none)."""
    from cellquery.instances.target import Target

    return Target.from_config(config, result.path.resolve().parents[1]).connect()


def held_out(dataset_ids, joinids) -> np.ndarray:
    """Which cells are held out: one in `HELD_OUT` by a hash of its join key, the same on every route and
    in every run."""
    keys = (f"{d}:{j}".encode() for d, j in zip(dataset_ids, joinids, strict=True))
    return np.fromiter((zlib.crc32(key) % HELD_OUT == 0 for key in keys), dtype=bool)


def lamin_loader(
    ln, result: Result, label: str, batch_size: int, seed: int = 0
) -> torch.utils.data.DataLoader:
    """The result's registered Collection as a map-style dataset (`Collection.mapped`) in a DataLoader."""
    uid = result.receipt.get("collection_uid")
    if uid is None:
        raise UserError(f"{result.path}/receipt.json names no collection: rerun with `-R register`")
    collection = ln.Collection.filter(uid=uid).one_or_none()
    if collection is None:
        raise UserError(
            f"{result.path}: its collection {uid} is not in {ln.setup.settings.instance.slug}, the target "
            "config/config.yaml names: point `target` at the instance the run registered it in"
        )
    mapped = collection.mapped(
        obs_keys=[label, *JOIN_KEYS], join="inner", encode_labels=False, dtype="float32", is_run_input=False
    )
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(mapped, batch_size=batch_size, shuffle=True, generator=generator)


def lamin_batches(loader: torch.utils.data.DataLoader, label: str) -> Batches:
    for batch in loader:
        yield batch["X"], list(batch[label]), held_out(*(batch[key] for key in JOIN_KEYS))


def census_loader(result: Result, label: str, batch_size: int, seed: int = 0):
    """The same cells streamed from the SOMA store (`tiledbsoma_ml`): the result's own, by their join keys;
    a store in object storage reached as the run reached it.

    Returns the DataLoader and, for each column it yields, the column of the result's genes it fills (genes
    the store lacks stay zero, as in the census route).
    """
    import tiledbsoma as soma
    from tiledbsoma_ml import ExperimentDataset, experiment_dataloader

    query = result.query
    store, settings = query["census"], query["storage"]["object_storage"]
    with open_store(store, settings) as census:
        experiment = census_experiment(census, store, query["organism"])
        if label not in experiment.obs.schema.names:
            raise UserError(
                f"--label {label!r}: the census route serves the Census' obs columns only ({label} is the "
                "source datasets' own); train it with --route lamin"
            )
        var = experiment.ms["RNA"].var.read(column_names=["soma_joinid", "feature_id"]).concat().to_pandas()
        genes = var.set_index("feature_id")["soma_joinid"].reindex(result.genes).dropna()
        with experiment.axis_query(
            "RNA",
            obs_query=soma.AxisQuery(coords=(result.census_joinids(experiment.obs),)),
            var_query=soma.AxisQuery(coords=(np.sort(genes.to_numpy(dtype=np.int64)),)),
        ) as axis_query:
            dataset = ExperimentDataset(
                axis_query,
                layer_name=X_NAME,
                obs_column_names=[label, *JOIN_KEYS],
                batch_size=batch_size,
                shuffle=True,
                seed=seed,
            )
            read = var.set_index("soma_joinid").loc[axis_query.var_joinids().to_numpy(), "feature_id"]
    return experiment_dataloader(dataset), result.genes.get_indexer(read)


def census_batches(loader, columns: np.ndarray, n_genes: int, label: str) -> Batches:
    for x, obs in loader:
        full = torch.zeros((len(obs), n_genes), dtype=torch.float32)
        full[:, columns] = torch.from_numpy(x)
        yield full, obs[label].astype(str).tolist(), held_out(*(obs[key] for key in JOIN_KEYS))


def passes(
    route: str, result: Result, label: str, batch_size: int, *, ln=None, seed: int = 0
) -> Callable[[], Batches]:
    """Passes of one route over the result's cells, each a fresh stream of (counts, labels, held-out flags)
    batches from one loader, counts on the result's genes.

    The census route holds only cells the Census inclusion rules keep (tissue or organoid, RNA assays); for
    a result within those rules (`validation.json`: h5ad_cells == census_cells) both serve the same cells.
    """
    if route == "lamin":
        loader = lamin_loader(ln, result, label, batch_size, seed)
        return lambda: lamin_batches(loader, label)
    loader, columns = census_loader(result, label, batch_size, seed)
    return lambda: census_batches(loader, columns, len(result.genes), label)


def batches(route: str, result: Result, label: str, batch_size: int, *, ln=None, seed: int = 0) -> Batches:
    """One pass of a fresh loader of the route (`passes`)."""
    return passes(route, result, label, batch_size, ln=ln, seed=seed)()


class Classifier(nn.Module):
    """log1p of the counts, then one linear layer: a cell-type classifier small enough for a CPU."""

    def __init__(self, n_genes: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(n_genes, n_classes)

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.log1p(counts))


def train(
    open_batches: Callable[[], Batches],
    n_genes: int,
    classes: list[str],
    *,
    epochs: int = 10,
    lr: float = 1e-2,
    seed: int = 0,
) -> dict:
    """A fresh classifier trained for `epochs` passes over the cells not held out, then one more pass that
    measures its accuracy on the held-out cells. Returns the cells of a pass, the held-out cells, the steps,
    the last training pass's mean loss, the held-out accuracy, seconds, cells/s and the labels a pass sees."""
    torch.manual_seed(seed)
    index = {name: i for i, name in enumerate(classes)}
    model = Classifier(n_genes, len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    started, steps = time.perf_counter(), 0
    for _ in range(epochs):
        loss_sum, trained = 0.0, 0
        for counts, labels, out in open_batches():
            if out.all():
                continue
            target = torch.tensor([index[name] for name in labels])[~out]
            loss = nn.functional.cross_entropy(model(counts[~out]), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps, loss_sum, trained = steps + 1, loss_sum + loss.item() * len(target), trained + len(target)
    seen, held, correct = Counter(), 0, 0
    with torch.no_grad():
        for counts, labels, out in open_batches():
            seen.update(labels)
            target = torch.tensor([index[name] for name in labels])[out]
            held += len(target)
            correct += int((model(counts[out]).argmax(dim=1) == target).sum())
    seconds = time.perf_counter() - started
    cells = sum(seen.values())
    return {
        "cells": cells,
        "held_out": held,
        "epochs": epochs,
        "steps": steps,
        "loss": loss_sum / trained if trained else float("nan"),
        "accuracy": correct / held if held else float("nan"),
        "seconds": round(seconds, 3),
        "cells_per_second": round(cells * (epochs + 1) / seconds, 1) if seconds else None,
        "labels": dict(sorted(seen.items())),
    }


def throughput(open_batches: Callable[[], Batches]) -> dict:
    """Loader speed alone: one epoch of a fresh loader, every value touched.

    A one-batch warm-up on another loader comes first, timed apart: it pays what a process pays once
    (on the census route, numba compiling tiledbsoma-ml's CSR kernels, about 5 s).
    """
    started = time.perf_counter()
    warmup = open_batches()
    next(warmup)
    warmup.close()
    warmed, cells, count = time.perf_counter(), 0, 0
    for counts, labels, _ in open_batches():
        float(counts.sum())
        cells += len(labels)
        count += 1
    seconds = time.perf_counter() - warmed
    return {
        "warmup_seconds": round(warmed - started, 3),
        "batches": count,
        "cells": cells,
        "seconds": round(seconds, 3),
        "cells_per_second": round(cells / seconds, 1),
    }
