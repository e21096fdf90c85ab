# The query pipeline: resolve (checkpoint) -> cache -> slice per artifact; census; concat; validate; register.


checkpoint resolve:
    input:
        DEMO_SUMMARY if QUERY.instance == "demo" else [],
    output:
        query=f"{RESULTS}/query.json",
        manifest=f"{RESULTS}/manifest.tsv",
    log:
        f"logs/{QUERY.name}/resolve.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        spec=QUERY,
        demo=DEMO,
        digest=QUERY.digest,
    script:
        "../scripts/resolve.py"


rule cache:
    input:
        # both checkpoint outputs: params read the manifest (cluster jobs insist on seeing them as inputs)
        query=ancient(f"{RESULTS}/query.json"),
        manifest=ancient(f"{RESULTS}/manifest.tsv"),
    output:
        f"{RESULTS}/cache/{{uid}}.json",
    log:
        f"logs/{QUERY.name}/cache/{{uid}}.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        spec=QUERY,
        demo=DEMO,
        hash=lambda wildcards: manifest_row(wildcards.uid)["hash"],
    script:
        "../scripts/cache.py"


rule slice:
    input:
        query=ancient(f"{RESULTS}/query.json"),
        manifest=ancient(f"{RESULTS}/manifest.tsv"),
        cached=f"{RESULTS}/cache/{{uid}}.json",
    output:
        f"{RESULTS}/slices/{{uid}}.h5ad",
    log:
        f"logs/{QUERY.name}/slice/{{uid}}.log",
    conda:
        "../envs/cellquery.yaml"
    resources:
        mem_mb=lambda wildcards: slice_memory_mb(wildcards.uid),
    params:
        dataset_id=lambda wildcards: manifest_row(wildcards.uid)["dataset_id"],
        cells_digest=QUERY.cells_digest,
    script:
        "../scripts/slice.py"


rule census:
    input:
        query=f"{RESULTS}/query.json",
        manifest=f"{RESULTS}/manifest.tsv",
    output:
        f"{RESULTS}/census.h5ad",
    log:
        f"logs/{QUERY.name}/census.log",
    conda:
        "../envs/cellquery.yaml"
    script:
        "../scripts/census.py"


rule concat:
    input:
        slices,
    output:
        f"{RESULTS}/{QUERY.name}.h5ad",
    log:
        f"logs/{QUERY.name}/concat.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        join=QUERY.gene_join,
    script:
        "../scripts/concat.py"


rule validate:
    input:
        result=f"{RESULTS}/{QUERY.name}.h5ad",
        census=f"{RESULTS}/census.h5ad",
        query=f"{RESULTS}/query.json",
        manifest=f"{RESULTS}/manifest.tsv",
    output:
        passed=f"{RESULTS}/.validation-passed",
    log:
        f"logs/{QUERY.name}/validate.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        report=f"{RESULTS}/validation.json",
    script:
        "../scripts/validate.py"


rule register:
    input:
        result=f"{RESULTS}/{QUERY.name}.h5ad",
        passed=f"{RESULTS}/.validation-passed",
        query=f"{RESULTS}/query.json",
        manifest=f"{RESULTS}/manifest.tsv",
    output:
        f"{RESULTS}/receipt.json",
    log:
        f"logs/{QUERY.name}/register.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        spec=QUERY,
        demo=DEMO,
    script:
        "../scripts/register.py"
