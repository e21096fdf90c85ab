from pathlib import Path

from cellquery.demo.build import write_shard
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    shard = int(snakemake.wildcards.shard)
    write_shard(snakemake.params.scale, shard, snakemake.params.seed, Path(snakemake.output[0]))
