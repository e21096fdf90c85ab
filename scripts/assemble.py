from pathlib import Path

from cellquery.query.assemble import assemble
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    inputs = snakemake.input
    assemble(
        [Path(p) for p in inputs.shards],
        Path(inputs.census),
        Path(inputs.query),
        Path(inputs.manifest),
        Path(snakemake.output[0]),
        Path(snakemake.params.report),
        snakemake.params.validation,
    )
