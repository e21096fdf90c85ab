from pathlib import Path

from cellquery.jobs import job_log
from cellquery.pipeline import cache_artifact

with job_log(snakemake.log[0]):
    uid = snakemake.wildcards.uid
    cache_artifact(snakemake.params.spec, snakemake.params.demo, uid, Path(snakemake.output[0]))
