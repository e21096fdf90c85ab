# What `snakemake --report results/<name>/report.html` shows: figures and pages of a finished run.


rule describe:
    """The report's figures and pages: spec, datasets, cells per dataset / cell type / tissue, validation,
    registered artifact and lineage."""
    input:
        result=f"{RESULTS}/{QUERY.name}.h5ad",
        query=f"{RESULTS}/query.json",
        manifest=f"{RESULTS}/manifest.tsv",
        receipt=f"{RESULTS}/receipt.json",
    output:
        spec=report(
            f"{RESULTS}/report/spec.html",
            category="Query",
            labels={"page": "spec and census filter"},
        ),
        datasets=report(
            f"{RESULTS}/report/datasets.html",
            category="Query",
            labels={"page": "datasets matched"},
        ),
        dataset_id=report(
            f"{RESULTS}/report/cells-per-dataset.svg",
            caption="../report/cells.rst",
            category="Cells",
            labels={"figure": "cells per dataset"},
        ),
        cell_type=report(
            f"{RESULTS}/report/cells-per-cell-type.svg",
            caption="../report/cells.rst",
            category="Cells",
            labels={"figure": "cells per cell type"},
        ),
        tissue=report(
            f"{RESULTS}/report/cells-per-tissue.svg",
            caption="../report/cells.rst",
            category="Cells",
            labels={"figure": "cells per tissue"},
        ),
        validation=report(
            f"{RESULTS}/report/validation.html",
            category="Validation",
            labels={"page": "h5ad route against census route"},
        ),
        lineage=report(
            f"{RESULTS}/report/lineage.html",
            category="Registry",
            labels={"page": "artifact and lineage"},
        ),
    log:
        f"logs/{QUERY.name}/describe.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        spec=QUERY,
        demo=DEMO,
        validation=f"{RESULTS}/validation.json",
    script:
        "../scripts/describe.py"
