from pathlib import Path

from cellquery.ingest.steps import register_version
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    submissions = {Path(p).stem: Path(p) for p in snakemake.input.submissions}
    version = snakemake.wildcards.version
    register_version(
        snakemake.params.atlas, version, snakemake.params.plan, submissions, Path(snakemake.output[0])
    )
