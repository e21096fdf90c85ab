from pathlib import Path

from cellquery.query.census_route import census_route
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    inputs, validation = snakemake.input, snakemake.params.validation
    census_route(Path(inputs.query), Path(inputs.manifest), Path(snakemake.output[0]), validation)
