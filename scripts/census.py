from pathlib import Path

from cellquery.census import census_route
from cellquery.jobs import job_log

with job_log(snakemake.log[0]):
    census_route(Path(snakemake.input.query), Path(snakemake.input.manifest), Path(snakemake.output[0]))
