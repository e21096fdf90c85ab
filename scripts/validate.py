from pathlib import Path

from cellquery.jobs import job_log
from cellquery.pipeline import validate_routes

with job_log(snakemake.log[0]):
    inputs = snakemake.input
    validate_routes(
        Path(inputs.result),
        Path(inputs.census),
        Path(inputs.query),
        Path(inputs.manifest),
        Path(snakemake.params.report),
        Path(snakemake.output.passed),
    )
