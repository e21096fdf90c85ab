"""How the artifacts of a query are split into shard jobs."""

from __future__ import annotations

import pandas as pd

from cellquery.query.shards import MAX_AUTO_SHARD, MIN_SHARD_BYTES, plan_shards

MiB = 2**20


def manifest(sizes_mib: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"uid": [f"a{i:04d}" for i in range(len(sizes_mib))], "size": [int(s * MiB) for s in sizes_mib]}
    )


def test_auto_puts_small_files_in_one_job_and_a_large_file_alone():
    plan = plan_shards(manifest([1200, 130, 60, 60, 30]), "auto")
    assert plan == [["a0000"], ["a0001", "a0002", "a0003", "a0004"]]


def test_auto_spreads_a_large_query_over_about_eight_jobs():
    plan = plan_shards(manifest([1000] * 64), "auto")
    assert len(plan) == 8 and all(len(shard) == 8 for shard in plan)


def test_auto_caps_artifacts_per_job_and_keeps_manifest_order():
    table = manifest([0.5] * 2000)
    plan = plan_shards(table, "auto")
    assert len(plan) == 2000 // MAX_AUTO_SHARD
    assert [uid for shard in plan for uid in shard] == list(table["uid"])


def test_auto_fills_shards_up_to_the_byte_budget():
    table = manifest([200, 200, 200, 5, 700])
    assert sum(table["size"][:2]) <= MIN_SHARD_BYTES < sum(table["size"][:3])
    assert plan_shards(table, "auto") == [["a0000", "a0001"], ["a0002", "a0003"], ["a0004"]]


def test_a_number_sets_artifacts_per_job():
    assert plan_shards(manifest([1] * 5), 2) == [["a0000", "a0001"], ["a0002", "a0003"], ["a0004"]]
    assert plan_shards(manifest([]), "auto") == []
