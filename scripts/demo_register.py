from pathlib import Path

from cellquery.demo.build import register_release
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    shard_dirs = [Path(p) for p in snakemake.input.shards]
    version = snakemake.wildcards.version
    register_release(snakemake.params.demo, version, shard_dirs, Path(snakemake.output[0]))
