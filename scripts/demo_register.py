from pathlib import Path

from cellquery.demo.build import register_all
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    shard_dirs = [Path(p) for p in snakemake.input.shards]
    register_all(snakemake.params.demo, snakemake.params.scale, shard_dirs, Path(snakemake.output[0]))
