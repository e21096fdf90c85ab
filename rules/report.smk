# What `snakemake --report results/report.html` shows: the figures and pages of every query of the build,
# one subcategory per query.


rule describe:
    """The report's figures and pages: spec, datasets, cells per dataset / cell type / tissue, validation,
    registered artifact and lineage."""
    input:
        result=FILES.result,
        query=FILES.query,
        manifest=FILES.manifest,
        receipt=FILES.receipt,
    output:
        spec=report(
            FILES.report("spec.html"),
            category="Query",
            subcategory="{query}",
            labels={"page": "spec and census filter"},
        ),
        datasets=report(
            FILES.report("datasets.html"),
            category="Query",
            subcategory="{query}",
            labels={"page": "datasets matched"},
        ),
        dataset_id=report(
            FILES.report("cells-per-dataset.svg"),
            caption="../report/cells.rst",
            category="Cells",
            subcategory="{query}",
            labels={"figure": "cells per dataset"},
        ),
        cell_type=report(
            FILES.report("cells-per-cell-type.svg"),
            caption="../report/cells.rst",
            category="Cells",
            subcategory="{query}",
            labels={"figure": "cells per cell type"},
        ),
        tissue=report(
            FILES.report("cells-per-tissue.svg"),
            caption="../report/cells.rst",
            category="Cells",
            subcategory="{query}",
            labels={"figure": "cells per tissue"},
        ),
        validation=report(
            FILES.report("validation.html"),
            category="Validation",
            subcategory="{query}",
            labels={"page": "h5ad route against census route"},
        ),
        lineage=report(
            FILES.report("lineage.html"),
            category="Registry",
            subcategory="{query}",
            labels={"page": "artifact and lineage"},
        ),
    log:
        FILES.log("describe"),
    conda:
        "../envs/cellquery.yaml"
    params:
        target=TARGET,
        validation=str(FILES.validation),  # a param: formatted with the wildcards as a string
    script:
        "../scripts/describe.py"
