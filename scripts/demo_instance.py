from pathlib import Path

from cellquery.demo.build import create_instance
from cellquery.jobs import job_log

with job_log(snakemake.log[0]):
    create_instance(snakemake.params.demo, snakemake.params.scale, Path(snakemake.output[0]))
