from pathlib import Path

from cellquery.demo.build import build_census_store
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    build_census_store(snakemake.params.demo, snakemake.wildcards.version, Path(snakemake.output[0]))
