"""cellquery: a YAML query over CELLxGENE-style data, built into a validated, versioned dataset."""

from snakemake.utils import min_version

from pathlib import Path

from cellquery import without_torch
from cellquery.summary import print_if_new

min_version("9.27")

without_torch()  # before anything imports anndata: jobs never load torch (see cellquery/__init__.py)


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


onsuccess:
    print_if_new(Path(RESULTS), QUERY.path, RUN_STARTED)
