# The query pipeline, one template over {query} (every spec of the build): resolve (checkpoint) -> shards
# (fetch, check, slice) and census -> assemble (concat, validate) -> exports -> register.
# Files: cellquery/files/layout.py.


checkpoint resolve:
    input:
        source_summary,
    output:
        query=FILES.query,
        manifest=FILES.manifest,
    log:
        FILES.log("resolve"),
    conda:
        "../envs/cellquery.yaml"
    params:
        spec=spec_of,
        source=source_of,
        storage=lambda wildcards: storage_of(spec_of(wildcards)),
        digest=lambda wildcards: spec_of(wildcards).digest,
        format=RESOLVED_FORMAT,
        checked=str(FILES.checked),
    script:
        "../scripts/resolve.py"


rule shard:
    input:
        # both checkpoint outputs: params read the manifest (cluster jobs insist on seeing them as inputs)
        query=ancient(FILES.query),
        manifest=ancient(FILES.manifest),
    output:
        FILES.shard("{shard}"),
    log:
        FILES.log("shard-{shard}"),
    conda:
        "../envs/cellquery.yaml"
    resources:
        mem_mb=shard_memory_mb,
    params:
        spec=spec_of,
        source=source_of,
        uids=shard_uids,
        cells_digest=lambda wildcards: spec_of(wildcards).cells_digest,
    script:
        "../scripts/shard.py"


rule census:
    input:
        query=FILES.query,
        manifest=FILES.manifest,
    output:
        FILES.census,
    log:
        FILES.log("census"),
    # one job per query, often its longest: started first, it runs beside the shards instead of after them
    priority: 1
    conda:
        "../envs/cellquery.yaml"
    params:
        validation=VALIDATION,
    script:
        "../scripts/census.py"


rule assemble:
    input:
        shards=shards,
        census=FILES.census,
        query=FILES.query,
        manifest=FILES.manifest,
    output:
        FILES.result,
    log:
        FILES.log("assemble"),
    conda:
        "../envs/cellquery.yaml"
    params:
        report=str(FILES.validation),  # not an output: a failed validation keeps its report for the reader
        validation=VALIDATION,
    script:
        "../scripts/assemble.py"


rule export_zarr:
    input:
        FILES.result,
    output:
        FILES.tracked_export("zarr"),
    log:
        FILES.log("export-zarr"),
    conda:
        "../envs/cellquery.yaml"
    params:
        format="zarr",
        path=str(FILES.export("zarr")),
    script:
        "../scripts/export.py"


rule export_obs_parquet:
    input:
        FILES.result,
    output:
        FILES.tracked_export("obs_parquet"),
    log:
        FILES.log("export-obs_parquet"),
    conda:
        "../envs/cellquery.yaml"
    params:
        format="obs_parquet",
        path=str(FILES.export("obs_parquet")),
    script:
        "../scripts/export.py"


rule register:
    input:
        result=FILES.result,
        query=FILES.query,
        manifest=FILES.manifest,
        exports=exports,
        target=target_made,
    output:
        FILES.receipt,
    log:
        FILES.log("register"),
    conda:
        "../envs/cellquery.yaml"
    params:
        spec=spec_of,
        target=TARGET,
    script:
        "../scripts/register.py"


rule target_instance:
    """The embedded target instance, where results, exports and lineage go (config: target)."""
    output:
        str(TARGET.receipt),
    log:
        TARGET_LOG,
    conda:
        "../envs/cellquery.yaml"
    params:
        target=TARGET,
    script:
        "../scripts/target_instance.py"


rule plan:
    """What every query of the build will fetch and hold, without reading any h5ad: `snakemake plan`."""
    input:
        [QueryFiles(name).plan for name in SPECS],


rule plan_query:
    input:
        query=FILES.query,
        manifest=FILES.manifest,
    output:
        FILES.plan,
    log:
        FILES.log("plan"),
    conda:
        "../envs/cellquery.yaml"
    params:
        asked=time.time(),  # a new value each invocation: the plan is made and printed whenever asked for
    script:
        "../scripts/plan.py"
