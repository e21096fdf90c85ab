from pathlib import Path

from cellquery.jobs import job_log
from cellquery.pipeline import slice_artifact

with job_log(snakemake.log[0]):
    query, cached = Path(snakemake.input.query), Path(snakemake.input.cached)
    slice_artifact(query, cached, snakemake.params.dataset_id, Path(snakemake.output[0]))
