from pathlib import Path

from cellquery.jobs import job_log
from cellquery.pipeline import census_route

with job_log(snakemake.log[0]):
    census_route(Path(snakemake.input.query), Path(snakemake.input.manifest), Path(snakemake.output[0]))
