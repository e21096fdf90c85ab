from cellquery.workflow.jobs import job_log

with job_log(snakemake.log[0]):
    snakemake.params.target.create()
