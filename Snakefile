"""cellquery: a YAML query over CELLxGENE-style data, built into a validated, versioned dataset."""

from snakemake.utils import min_version

from pathlib import Path

from cellquery.files.layout import BUILD_JSON, BUILD_LOG, BUILD_TABLE, QueryFiles
from cellquery.query.summary import print_new_summaries

min_version("9.27")


configfile: f"{workflow.basedir}/config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/query.smk"
include: "rules/report.smk"


if ATLAS_SPEC:

    include: "rules/ingest.smk"

else:

    rule ingest:
        """Without an atlas spec: one line saying how to give one."""
        log:
            "logs/ingest.log",
        conda:
            "envs/cellquery.yaml"
        shell:
            "echo 'cellquery: config: atlas: give an atlas spec to ingest, e.g. "
            "--config atlas=config/atlas.yaml (docs/atlas.md)' | tee {log} >&2; exit 1"


rule all:
    default_target: True
    input:
        BUILD_TABLE,


rule build:
    """Every query of the build registered and described; results/build.tsv (and .json) lists them."""
    input:
        receipts=[QueryFiles(name).receipt for name in SPECS],
        reports=expand(rules.describe.output, query=list(SPECS)),
    output:
        table=BUILD_TABLE,
        json=BUILD_JSON,
    log:
        BUILD_LOG,
    conda:
        "envs/cellquery.yaml"
    params:
        specs=SPECS,
    script:
        "scripts/build.py"


onstart:
    KEEP_CHECKED()  # not at parse: a dry run writes nothing


onsuccess:
    print_new_summaries(SPECS, RUN_STARTED)
