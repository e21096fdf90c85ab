"""`demo_scale: atlas` meets its own numbers, read from the catalog alone (nothing is generated or built);
what makes its build fit the machine: h5ads linked to their stored copies, census blocks in global order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import tiledbsoma as soma

from cellquery.demo import build, catalog
from cellquery.store import arrays

ATLAS = catalog.datasets("atlas")
LATEST = [d for d in ATLAS if catalog.V2 in d.versions]


def test_the_latest_version_holds_two_million_cells_in_a_hundred_datasets():
    assert sum(d.n_cells for d in LATEST) >= 2_000_000
    assert len({d.dataset_id for d in LATEST}) >= 100


def test_four_or_more_files_of_a_gigabyte_and_none_much_larger():
    """At about 5.3 kB per cell (the bench scale's 220,000-cell file: 1.16 GB), 220,000 cells make 1.1 GB."""
    assert sum(d.n_cells >= 220_000 for d in LATEST) >= 4
    assert max(d.n_cells for d in ATLAS) <= 250_000


def test_the_first_version_is_a_small_subset():
    first = [d for d in ATLAS if catalog.V1 in d.versions]
    assert first and {d.dataset_id for d in first} < {d.dataset_id for d in LATEST}
    assert sum(d.n_cells for d in first) <= 250_000  # its census store stays small


def test_datasets_are_distinct_and_of_the_small_scales_organisms():
    assert len({d.slug for d in ATLAS}) == len({d.dataset_id for d in ATLAS})
    assert len({d.file_stem for d in ATLAS}) == len(ATLAS)  # a file per dataset and schema generation
    assert {d.organism for d in ATLAS} == {catalog.HUMAN, catalog.MOUSE, catalog.MARMOSET}


def test_generation_jobs_are_bounded_and_enough_for_two_cores():
    batches = catalog.generation_batches("atlas")
    assert [d for batch in batches for d in batch] == ATLAS  # every dataset once, in catalog order
    assert max(sum(d.n_cells for d in batch) for batch in batches) <= catalog.GENERATION_CELLS["atlas"]
    assert len(batches) >= 6


def test_the_other_scales_keep_their_jobs():
    assert [len(b) for b in catalog.generation_batches("bench")] == [1] * len(catalog.datasets("bench"))
    assert len(catalog.generation_batches("registry")) == 8


def test_release_files_are_hard_links_to_the_generated_ones(tmp_path):
    generated, stored = tmp_path / "generated.h5ad", tmp_path / "2025-01-30" / "stored.h5ad"
    generated.write_bytes(b"counts" * 100)
    stored.parent.mkdir()
    build.link_or_copy(generated, stored)
    assert generated.samefile(stored) and stored.read_bytes() == b"counts" * 100


def test_census_blocks_in_global_order_are_written_unsorted_and_read_back_whole(tmp_path):
    """A block spanning two row tiles and three column tiles, in the order `_global_order` gives."""
    counts = sp.random(300, 5000, density=0.01, format="csr", random_state=0, dtype=np.float32)
    array = soma.SparseNDArray.create(str(tmp_path / "raw"), type=pa.float32(), shape=(5000, 5000))
    coo = counts.tocoo()
    rows, cols = coo.row.astype(np.int64) + 1900, coo.col.astype(np.int64)  # rows 1900-2199
    order = arrays.global_order(rows, cols, arrays.tile_extents(array))
    array.close()
    with soma.SparseNDArray.open(str(tmp_path / "raw"), "w") as array:
        table = arrays.coo_table(rows[order], cols[order], coo.data[order])
        array.write(table, platform_config=arrays.SORTED)
    with soma.SparseNDArray.open(str(tmp_path / "raw")) as array:
        back = array.read().coos().concat().to_scipy().tocsr()[1900:2200]
    assert (back != counts).nnz == 0
