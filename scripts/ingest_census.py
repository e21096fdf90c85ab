from pathlib import Path

from cellquery.ingest.steps import build_version_store
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    build_version_store(snakemake.params.atlas, snakemake.wildcards.version, Path(snakemake.output[0]))
