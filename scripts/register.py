from pathlib import Path

from cellquery.files.layout import export_of
from cellquery.query.registration import register
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    inputs, params = snakemake.input, snakemake.params
    register(
        params.spec,
        params.target,
        Path(inputs.result),
        Path(inputs.query),
        Path(inputs.manifest),
        Path(snakemake.output[0]),
        [export_of(Path(p)) for p in inputs.exports],
    )
