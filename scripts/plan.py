from pathlib import Path

from cellquery.query.plan import write_plan
from cellquery.workflow.jobs import echo, job_log

with job_log(snakemake.log[0]):
    inputs = snakemake.input
    echo(write_plan(Path(inputs.query), Path(inputs.manifest), Path(snakemake.output[0])))
