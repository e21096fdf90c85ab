from pathlib import Path

from cellquery.jobs import job_log
from cellquery.pipeline import resolve_query

with job_log(snakemake.log[0]):
    output = snakemake.output
    resolve_query(snakemake.params.spec, snakemake.params.demo, Path(output.query), Path(output.manifest))
