from pathlib import Path

from cellquery.jobs import echo, job_log
from cellquery.plan import write_plan

with job_log(snakemake.log[0]):
    inputs = snakemake.input
    echo(write_plan(Path(inputs.query), Path(inputs.manifest), Path(snakemake.output[0])))
