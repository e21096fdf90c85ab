from pathlib import Path

from cellquery.outputs.exports import write_export
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    write_export(Path(snakemake.input[0]), snakemake.params.format, Path(snakemake.params.path))
