from pathlib import Path

from cellquery.ingest.steps import find_imports
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    params = snakemake.params
    find_imports(params.source, dict(params.wanted), params.storage, Path(snakemake.output[0]))
