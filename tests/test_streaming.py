"""Streaming a slice from an h5ad in object storage: the largest bench file in a bucket of a real S3 server
on loopback (SeaweedFS), bytes counted by a proxy. A small clustered slice moves a fraction of the file, the
streamed slice equals the slice of the downloaded file, and network faults are survived."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from bench.proxy import CountingProxy, Faults
from cellquery.cellxgene.release import releases
from cellquery.demo import catalog, synth
from cellquery.files import h5ad
from cellquery.query.slicing import slice_dataset
from cellquery.spec.criteria import Criterion, obs_mask
from cellquery.storage.objectstore import ObjectServer
from cellquery.storage.settings import filesystem
from cellquery.storage.streaming import estimated_stream_bytes, remote_file, streamed

pytestmark = pytest.mark.slow

BUCKET = "cellquery-streaming-test"
REMOTE = f"{BUCKET}/cellxgene/atlas.h5ad"


@pytest.fixture(scope="module")
def server(object_server_root):
    return ObjectServer.at(object_server_root).ensure_running()


@pytest.fixture(scope="module")
def atlas(server, tmp_path_factory, monkeypatch_module):
    """The bench demo's largest dataset (220,000 cells, cells in cell-type order as the portal's often
    are), written locally and uploaded; returns its local path and obs."""
    for name, value in server.uploader_env().items():
        monkeypatch_module.setenv(name, value)
    spec = max(catalog.release("bench", catalog.V2), key=lambda d: d.n_cells)  # a schema 7 file
    local = tmp_path_factory.mktemp("atlas") / "atlas.h5ad"
    synth.write_dataset(spec, 0, local)
    fs = filesystem(f"s3://{BUCKET}?endpoint_url={server.endpoint}")
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put_file(str(local), REMOTE)
    return local, h5ad.read_frame(local, "obs")


@pytest.fixture
def proxy(server):
    counting = CountingProxy(server.port)
    yield counting
    counting.close()


def through(proxy):
    return filesystem(f"s3://{BUCKET}?endpoint_url={proxy.endpoint}")


def cell_type_nearest(obs: pd.DataFrame, share: float) -> str:
    shares = obs["cell_type_ontology_term_id"].value_counts(normalize=True)
    return (shares - share).abs().idxmin()


def slice_of(source, criteria, out):
    slice_dataset(
        source,
        criteria,
        dataset_id="atlas",
        organism="NCBITaxon:9606",
        release=releases()[-1],
        obs_columns=["cell_type", "donor_id"],
        gene_ids=None,
        out=out,
    )
    return ad.read_h5ad(out)


def assert_same(left: ad.AnnData, right: ad.AnnData) -> None:
    pd.testing.assert_frame_equal(left.obs, right.obs)
    pd.testing.assert_frame_equal(left.var, right.var)
    assert left.X.shape == right.X.shape and (left.X != right.X).nnz == 0


def test_a_contiguous_five_percent_slice_moves_under_a_quarter_and_equals_the_cached_slice(
    atlas, proxy, tmp_path
):
    local, obs = atlas
    cell_type = cell_type_nearest(obs, 0.05)
    criteria = [Criterion("cell_type_ontology_term_id", "in", (cell_type,))]
    rows = np.flatnonzero(obs["cell_type_ontology_term_id"] == cell_type)
    assert 0.03 < len(rows) / len(obs) < 0.08 and rows[-1] - rows[0] + 1 == len(rows)  # contiguous
    cached = slice_of(local, criteria, tmp_path / "cached.h5ad")
    with remote_file(through(proxy), REMOTE) as handle:
        stream = slice_of(handle, criteria, tmp_path / "streamed.h5ad")
    size = local.stat().st_size
    assert 0 < proxy.received <= 0.25 * size
    assert stream.n_obs == len(rows)
    assert_same(cached, stream)


@pytest.mark.parametrize("selection", ["contiguous 5%", "contiguous 60%", "scattered 5%"])
def test_the_estimate_is_within_a_factor_two_of_the_bytes_moved(atlas, proxy, tmp_path, selection):
    local, obs = atlas
    if selection == "scattered 5%":
        chosen = obs.index[np.random.default_rng(0).random(len(obs)) < 0.05]
        criteria = [Criterion("observation_joinid", "in", tuple(obs.loc[chosen, "observation_joinid"]))]
    else:
        shares = obs["cell_type_ontology_term_id"].value_counts(normalize=True).sort_values()
        share = 0.05 if selection == "contiguous 5%" else 0.6
        types = shares.index[: np.searchsorted(shares.cumsum().to_numpy(), share) + 1]
        if share == 0.05:
            types = [cell_type_nearest(obs, share)]
        criteria = [Criterion("cell_type_ontology_term_id", "in", tuple(types))]
    positions = np.flatnonzero(obs_mask(obs, criteria)) / len(obs)
    with remote_file(through(proxy), REMOTE) as handle:
        slice_of(handle, criteria, tmp_path / "streamed.h5ad")
    estimate = estimated_stream_bytes(local.stat().st_size, len(obs), positions)
    assert proxy.received / 2 <= estimate <= proxy.received * 2


@pytest.mark.parametrize(
    "fault", [Faults(drop_after=3 * 2**20), Faults(stall_after=3 * 2**20, stall_seconds=15)]
)
def test_a_stream_survives_a_dropped_connection_and_a_stall(atlas, proxy, tmp_path, fault):
    local, obs = atlas
    criteria = [Criterion("cell_type_ontology_term_id", "in", (cell_type_nearest(obs, 0.05),))]
    cached = slice_of(local, criteria, tmp_path / "cached.h5ad")
    proxy.faults = fault

    def read(handle):
        return slice_of(handle, criteria, tmp_path / "streamed.h5ad")

    stream, moved = streamed(read, through(proxy), REMOTE, "atlas")
    assert moved > 0
    assert_same(cached, stream)
