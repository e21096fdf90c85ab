from pathlib import Path

from cellquery.jobs import echo, job_log
from cellquery.pipeline import register
from cellquery.summary import result_summary

with job_log(snakemake.log[0]):
    inputs, params = snakemake.input, snakemake.params
    receipt = register(
        params.spec,
        params.demo,
        Path(inputs.result),
        Path(inputs.query),
        Path(inputs.manifest),
        Path(snakemake.output[0]),
    )
    echo(result_summary(Path(snakemake.output[0]).parent, params.spec.path))
