"""The result in other formats (`output.formats`): an AnnData zarr store and the obs as Parquet, each written
atomically from the validated h5ad, matrices copied a chunk at a time."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py

from cellquery.files.atomic import atomic_path
from cellquery.outputs.provenance import PARQUET_KEY, as_json
from cellquery.workflow.faults import failpoint

log = logging.getLogger(__name__)

FRAMES = ("obs", "var", "uns", "obsm", "varm", "obsp", "varp")  # small: read whole, written whole
CHUNK = 2**20  # values per zarr chunk of a matrix array, and per copy
ZARR_FORMAT = 2  # what anndata writes by default, and what every anndata (0.11 too) and zarr v2 tool reads


def write_export(result: Path, fmt: str, out: Path) -> None:
    """Write the result h5ad as `fmt` (`zarr` or `obs_parquet`) to `out`."""
    writers = {"zarr": write_zarr, "obs_parquet": write_obs_parquet}
    with atomic_path(out) as tmp:
        writers[fmt](result, tmp)
        failpoint("export")
    log.info("wrote %s (%s)", out, fmt)


def write_zarr(result: Path, out: Path) -> None:
    """An AnnData zarr store (zarr format 2, as anndata writes it by default) of the h5ad."""
    import anndata as ad
    import zarr

    root = zarr.open_group(str(out), mode="w", zarr_format=ZARR_FORMAT)
    with h5py.File(result, "r") as source:
        root.attrs.update(dict(source.attrs))
        for key in FRAMES:
            if key in source:
                ad.io.write_elem(root, key, ad.io.read_elem(source[key]))
        _copy_matrix(source["X"], root, "X")
        layers = root.create_group("layers")
        layers.attrs.update(dict(source["layers"].attrs))
        for name in source["layers"]:
            _copy_matrix(source["layers"][name], layers, name)


def _copy_matrix(source: h5py.Group, parent, name: str) -> None:
    """A sparse matrix's arrays copied one chunk at a time, with its encoding attributes."""
    group = parent.create_group(name)
    group.attrs.update({k: v.tolist() if hasattr(v, "tolist") else v for k, v in source.attrs.items()})
    for array_name, array in source.items():
        target = group.create_array(array_name, shape=array.shape, dtype=array.dtype, chunks=(CHUNK,))
        for start in range(0, array.shape[0], CHUNK):
            target[start : start + CHUNK] = array[start : start + CHUNK]


def write_obs_parquet(result: Path, out: Path) -> None:
    """The result's obs as a Parquet table, the cell names in column `obs_names`, categoricals as
    dictionaries, and the provenance in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cellquery.files.h5ad import read_frame
    from cellquery.outputs.provenance import read_provenance

    obs = read_frame(result, "obs")
    table = pa.Table.from_pandas(obs.rename_axis("obs_names").reset_index(), preserve_index=False)
    story = as_json(read_provenance(result))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_KEY: story.encode()})
    pq.write_table(table, out)
