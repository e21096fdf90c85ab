from pathlib import Path

from cellquery.jobs import job_log
from cellquery.pipeline import concat_shards

with job_log(snakemake.log[0]):
    concat_shards([Path(p) for p in snakemake.input], snakemake.params.join, Path(snakemake.output[0]))
