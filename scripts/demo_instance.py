from pathlib import Path

from cellquery.demo.build import create_instance
from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    seed = snakemake.config["demo_seed"]  # recorded, not a param: a changed seed is refused, not rebuilt
    create_instance(snakemake.params.demo, seed, Path(snakemake.output[0]))
