from pathlib import Path

from cellquery.query.report import describe
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    inputs, params = snakemake.input, snakemake.params
    describe(
        params.target,
        {name: Path(path) for name, path in inputs.items()} | {"validation": Path(params.validation)},
        dict(snakemake.output.items()),
    )
