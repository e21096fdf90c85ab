from pathlib import Path

from cellquery.ingest.steps import submit
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    submit(Path(snakemake.input[0]), Path(snakemake.output[0]))
