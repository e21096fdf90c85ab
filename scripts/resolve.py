from pathlib import Path

from cellquery.jobs import job_log
from cellquery.pipeline import resolve_query

with job_log(snakemake.log[0]):
    output = snakemake.output
    params = snakemake.params
    resolve_query(params.spec, params.demo, params.storage, Path(output.query), Path(output.manifest))
