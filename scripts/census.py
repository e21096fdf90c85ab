from pathlib import Path

from cellquery.query.census_route import census_route
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    census_route(Path(snakemake.input.query), Path(snakemake.input.manifest), Path(snakemake.output[0]))
