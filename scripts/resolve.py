from pathlib import Path

from cellquery.query.resolve import resolve_query
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    output = snakemake.output
    params = snakemake.params
    query, manifest = Path(output.query), Path(output.manifest)
    resolve_query(params.spec, params.source, params.storage, query, manifest, Path(params.checked))
