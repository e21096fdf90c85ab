from pathlib import Path

from cellquery.ingest.steps import write_summary
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    write_summary(snakemake.params.atlas, [Path(p) for p in snakemake.input])
