from pathlib import Path

from cellquery.ingest.store import build_version_store
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    version, previous = snakemake.wildcards.version, snakemake.params.previous
    build_version_store(snakemake.params.demo, version, previous, Path(snakemake.output[0]))
