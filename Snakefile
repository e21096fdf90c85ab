"""cellquery: a YAML query over CELLxGENE-style data, built into a validated, versioned dataset."""

import os

from snakemake.utils import min_version

min_version("9.27")

# before any cellquery import: jobs (and this process) never load torch (see cellquery/__init__.py)
os.environ["CELLQUERY_WITHOUT_TORCH"] = "1"


configfile: f"{workflow.basedir}/config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/query.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/receipt.json",
        rules.describe.output,
