from pathlib import Path

from cellquery.query.build import write_build_table
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    output = snakemake.output
    write_build_table(snakemake.params.specs, Path(output.table), Path(output.json))
