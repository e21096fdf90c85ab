from pathlib import Path

from cellquery.demo.build import write_summary
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    write_summary(snakemake.params.demo, Path(snakemake.output[0]))
