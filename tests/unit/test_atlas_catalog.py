"""`demo_scale: atlas` meets its own numbers, read from the catalog alone (nothing is generated or built)."""

from __future__ import annotations

from cellquery.demo import catalog

ATLAS = catalog.datasets("atlas")
LATEST = [d for d in ATLAS if catalog.V2 in d.versions]


def test_the_latest_version_holds_two_million_cells_in_a_hundred_datasets():
    assert sum(d.n_cells for d in LATEST) >= 2_000_000
    assert len({d.key for d in LATEST}) >= 100


def test_four_or_more_files_of_a_gigabyte_and_none_much_larger():
    """At about 5.3 kB per cell (the bench scale's 220,000-cell file: 1.16 GB), 220,000 cells make 1.1 GB."""
    assert sum(d.n_cells >= 220_000 for d in LATEST) >= 4
    assert max(d.n_cells for d in ATLAS) <= 250_000


def test_the_first_version_is_a_small_subset():
    first = [d for d in ATLAS if catalog.V1 in d.versions]
    assert first and {d.key for d in first} < {d.key for d in LATEST}
    assert sum(d.n_cells for d in first) <= 250_000  # its census store stays small


def test_datasets_are_distinct_and_human_and_mouse():
    assert len({d.slug for d in ATLAS}) == len({d.dataset_id for d in ATLAS}) == len(ATLAS)
    assert {d.organism for d in ATLAS} == {catalog.HUMAN, catalog.MOUSE}


def test_generation_jobs_are_bounded_and_enough_for_two_cores():
    batches = catalog.generation_batches("atlas")
    assert [d for batch in batches for d in batch] == ATLAS  # every dataset once, in catalog order
    assert max(sum(d.n_cells for d in batch) for batch in batches) <= catalog.GENERATION_CELLS["atlas"]
    assert len(batches) >= 6


def test_the_other_scales_keep_their_jobs():
    assert [len(b) for b in catalog.generation_batches("bench")] == [1] * len(catalog.datasets("bench"))
    assert len(catalog.generation_batches("registry")) == 8
