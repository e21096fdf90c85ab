from pathlib import Path

from cellquery.query.shards import process_shard
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    inputs, params = snakemake.input, snakemake.params
    query, manifest, out = Path(inputs.query), Path(inputs.manifest), Path(snakemake.output[0])
    process_shard(params.spec, params.source, query, manifest, params.uids, out)
