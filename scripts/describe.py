from pathlib import Path

from cellquery.jobs import job_log
from cellquery.report import describe

with job_log(snakemake.log[0]):
    inputs, params = snakemake.input, snakemake.params
    describe(
        params.target,
        {name: Path(path) for name, path in inputs.items()} | {"validation": Path(params.validation)},
        dict(snakemake.output.items()),
    )
