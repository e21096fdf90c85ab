# One's own atlas (config `atlas`: an atlas spec): each version's h5ads standardized and accepted by the
# CELLxGENE validator, and datasets of other instances recorded zero-copy, registered as a version of the
# atlas's `cellxgene-census` collection, a Census-shaped store built per version; all under
# .cellquery/atlas/<name>/ (cellquery/ingest/).


rule ingest:
    input:
        ATLAS_SUMMARY,


rule ingest_submission:
    input:
        lambda w: ATLAS_SPEC.files(w.version)[w.dataset],
    output:
        f"{ATLAS_DIR}/submissions/{{version}}/{{dataset}}.h5ad",
    log:
        f"{ATLAS_LOGS}/submissions/{{version}}/{{dataset}}.log",
    conda:
        "../envs/cellquery.yaml"
    script:
        "../scripts/ingest_submission.py"


rule ingest_import:
    input:
        imported_source_summary,
    output:
        f"{ATLAS_DIR}/imports/{{version}}/{{source}}.json",
    log:
        f"{ATLAS_LOGS}/imports/{{version}}/{{source}}.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        source=lambda w: source_for_slug(ATLAS_SPEC.import_sources(w.version)[w.source]),
        wanted=lambda w: {
            dataset: imported.version
            for dataset, imported in ATLAS_SPEC.imports(w.version, w.source).items()
        },
        storage=STORAGE,
    script:
        "../scripts/ingest_import.py"


rule ingest_version:
    input:
        submissions=lambda w: [
            f"{ATLAS_DIR}/submissions/{w.version}/{dataset}.h5ad"
            for dataset in ATLAS_SPEC.files(w.version)
        ],
        imports=lambda w: [
            f"{ATLAS_DIR}/imports/{w.version}/{source}.json"
            for source in ATLAS_SPEC.import_sources(w.version)
        ],
        # versions are registered in order: each revises the one before
        previous=lambda w: receipt_of(
            ATLAS_DIR, "versions", ATLAS_SPEC.previous(w.version)
        ),
    output:
        f"{ATLAS_DIR}/versions/{{version}}.json",
    log:
        f"{ATLAS_LOGS}/version-{{version}}.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        atlas=ATLAS,
        plan=lambda w: ATLAS_SPEC.plan(w.version),
    script:
        "../scripts/ingest_version.py"


rule ingest_census:
    input:
        version=f"{ATLAS_DIR}/versions/{{version}}.json",
        previous=lambda w: receipt_of(
            ATLAS_DIR, "census", ATLAS_SPEC.previous(w.version)
        ),
    output:
        f"{ATLAS_DIR}/census/{{version}}.json",
    log:
        f"{ATLAS_LOGS}/census-{{version}}.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        atlas=ATLAS,
        previous=lambda w: ATLAS_SPEC.previous(w.version),
    script:
        "../scripts/ingest_census.py"


rule ingest_summary:
    input:
        [receipt_of(ATLAS_DIR, "census", version)[0] for version in ATLAS_VERSIONS],
    output:
        ATLAS_SUMMARY,
    log:
        f"{ATLAS_LOGS}/summary.log",
    conda:
        "../envs/cellquery.yaml"
    params:
        atlas=ATLAS,
    script:
        "../scripts/ingest_summary.py"
