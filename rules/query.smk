# The query pipeline: resolve (checkpoint) -> shards (fetch, check, slice) and census -> assemble (concat,
# validate) -> register.


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
        storage=STORAGE,
        digest=QUERY.digest,
        format=RESOLVED_FORMAT,
    script:
        "../scripts/resolve.py"


rule shard:
    input:
        # both checkpoint outputs: params read the manifest (cluster jobs insist on seeing them as inputs)
        query=ancient(f"{RESULTS}/query.json"),
        manifest=ancient(f"{RESULTS}/manifest.tsv"),
    output:
        f"{RESULTS}/shards/{{shard}}.json",
    log:
        f"logs/{QUERY.name}/shard-{{shard}}.log",
    conda:
        "../envs/cellquery.yaml"
    resources:
        mem_mb=lambda wildcards: shard_memory_mb(int(wildcards.shard)),
    params:
        spec=QUERY,
        demo=DEMO,
        uids=lambda wildcards: shard_uids(int(wildcards.shard)),
        cells_digest=QUERY.cells_digest,
    script:
        "../scripts/shard.py"


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


rule assemble:
    input:
        shards=shards,
        census=f"{RESULTS}/census.h5ad",
        query=f"{RESULTS}/query.json",
        manifest=f"{RESULTS}/manifest.tsv",
    output:
        f"{RESULTS}/{QUERY.name}.h5ad",
    log:
        f"logs/{QUERY.name}/assemble.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        report=f"{RESULTS}/validation.json",
    script:
        "../scripts/assemble.py"


rule register:
    input:
        result=f"{RESULTS}/{QUERY.name}.h5ad",
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


rule plan:
    """What the query will fetch and hold, per dataset, without reading any h5ad: `snakemake plan`."""
    input:
        query=f"{RESULTS}/query.json",
        manifest=f"{RESULTS}/manifest.tsv",
    output:
        f"{RESULTS}/plan.tsv",
    log:
        f"logs/{QUERY.name}/plan.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        asked=time.time(),  # a new value each invocation: the plan is made and printed whenever asked for
    script:
        "../scripts/plan.py"
