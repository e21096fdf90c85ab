# The embedded demo: a LaminDB instance with CELLxGENE-style h5ads, two collection versions and a
# Census-shaped SOMA store per version, built offline and deterministically under .demo/<scale>/; each
# release registered and its store made by the steps that make an atlas's version (cellquery/ingest/).


rule demo:
    input:
        DEMO_SUMMARY,


rule demo_instance:
    output:
        f"{DEMO_DIR}/instance.json",
    log:
        f"{DEMO_LOGS}/instance.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        demo=DEMO,
        format=DEMO_FORMAT,
    script:
        "../scripts/demo_instance.py"


rule demo_h5ads:
    output:
        directory(f"{DEMO_DIR}/h5ad/shard-{{shard}}"),
    log:
        f"{DEMO_LOGS}/h5ad/shard-{{shard}}.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        scale=SCALE,
        seed=config["demo_seed"],
        format=DEMO_FORMAT,
    script:
        "../scripts/demo_h5ads.py"


rule demo_register:
    input:
        instance=rules.demo_instance.output[0],
        shards=expand(f"{DEMO_DIR}/h5ad/shard-{{shard}}", shard=range(N_BATCHES)),
        # a release's collection and h5ads revise the previous release's (registered first)
        previous=lambda w: receipt_of(DEMO_DIR, "versions", previous_release(w.version)),
    output:
        f"{DEMO_DIR}/versions/{{version}}.json",
    log:
        f"{DEMO_LOGS}/register-{{version}}.log",
    wildcard_constraints:
        version=r"\d{4}-\d{2}-\d{2}",
    conda:
        "../envs/cellquery.yaml"
    params:
        demo=DEMO,
    script:
        "../scripts/demo_register.py"


rule demo_census:
    input:
        registered=f"{DEMO_DIR}/versions/{{version}}.json",
        # a release's store revises the previous release's (registered first), made by the step that makes
        # an atlas version's (cellquery.ingest.store)
        previous=lambda w: receipt_of(DEMO_DIR, "census", previous_release(w.version)),
    output:
        f"{DEMO_DIR}/census/{{version}}.json",
    log:
        f"{DEMO_LOGS}/census-{{version}}.log",
    wildcard_constraints:
        version=r"\d{4}-\d{2}-\d{2}",
    conda:
        "../envs/cellquery.yaml"
    params:
        demo=DEMO,
        format=DEMO_FORMAT,
        previous=lambda w: previous_release(w.version),
    script:
        "../scripts/demo_census.py"


rule demo_summary:
    input:
        expand(f"{DEMO_DIR}/census/{{version}}.json", version=[V1, V2]),
    output:
        DEMO_SUMMARY,
    log:
        f"{DEMO_LOGS}/summary.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        demo=DEMO,
    script:
        "../scripts/demo_summary.py"
