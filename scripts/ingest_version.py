import json
from pathlib import Path

from cellquery.ingest.version import Additions, register_version
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    additions = Additions(
        submissions={Path(p).stem: Path(p) for p in snakemake.input.submissions},
        found=[json.loads(Path(p).read_text()) for p in snakemake.input.imports],
    )
    version, params = snakemake.wildcards.version, snakemake.params
    register_version(params.atlas, version, params.plan, additions, Path(snakemake.output[0]))
