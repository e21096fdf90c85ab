import json
import os
import re
import time
import uuid
from pathlib import Path

from cellquery.demo.catalog import V1, V2, generation_batches, previous_release
from cellquery.workflow.jobs import claim_workdir
from cellquery.instances.atlas_instance import ATLAS_DIR as ATLASES, AtlasInstance
from cellquery.instances.demo_instance import DEMO_FORMAT, DemoInstance
from cellquery.ingest.atlas_spec import load_atlas_spec
from cellquery.query.resolve import RUN_VARIABLE
from cellquery.query.runfiles import RESOLVED_FORMAT, discard_if_damaged, read_manifest
from cellquery.query.shards import plan_shards
from cellquery.query.build import checked_build, outdate_unfinished_build
from cellquery.spec.configuration import check_config
from cellquery.files.layout import DEMO_LOG_DIR, TARGET_LOG, QueryFiles
from cellquery.instances.owners import latest_owners
from cellquery.errors import one_line_exit
from cellquery.instances.source import Source, source_for
from cellquery.storage.settings import STORAGE_DEFAULTS
from cellquery.instances.target import Target

with one_line_exit():  # one line per problem, naming the key
    check_config(config)

SCALE = config["demo_scale"]
DEMO = DemoInstance(
    Path.cwd(), SCALE, config["demo_db_url"] or None, config["demo_storage"]
)
# where results go; the demo is only read
TARGET = Target.from_config(config, Path.cwd())
DEMO_DIR = f".demo/{DEMO.dirname}"
DEMO_LOGS = f"{DEMO_LOG_DIR}/{DEMO.dirname}"
# what every job that reads the data uses: where downloads go, how to reach object storage
STORAGE = {key: config[key] for key in STORAGE_DEFAULTS}
# how the census route proves the h5ad route: a sampled validation reads its share of the census' counts
VALIDATION = {"mode": config["validation"]} | (
    {"fraction": config["validation_sample"]}
    if config["validation"] == "sampled"
    else {}
)
DEMO_SUMMARY = f"{DEMO_DIR}/summary.json"
N_BATCHES = len(generation_batches(SCALE))
with one_line_exit():  # the atlas `ingest` builds, when the config names one
    ATLAS_SPEC = (
        load_atlas_spec(config["atlas"], Path(workflow.basedir))
        if config["atlas"]
        else None
    )
if ATLAS_SPEC:
    with one_line_exit():
        ATLAS = AtlasInstance.of(
            Path.cwd(),
            ATLAS_SPEC.name,
            config["atlas_db_url"] or None,
            config["atlas_storage"] or None,
        )
    ATLAS_DIR = f"{ATLASES}/{ATLAS_SPEC.name}"
    ATLAS_LOGS = f"{ATLAS_DIR}/logs"
    ATLAS_SUMMARY = f"{ATLAS_DIR}/summary.json"
    ATLAS_VERSIONS = list(ATLAS_SPEC.versions)


def receipt_of(folder, kind, version):
    """A version's receipt of one step (`versions`, `census`) of the demo or an atlas (`folder`), as a
    list: none for no version."""
    return [f"{folder}/{kind}/{version}.json"] if version else []


def source_for_slug(slug):
    """The instance a slug names (demo, atlas:<name>, owner/name), as this project holds it."""
    return Source(slug, DEMO)


def imported_source_summary(wildcards):
    """What recording another instance's datasets waits for: the demo, built (by this run when absent)."""
    slug = ATLAS_SPEC.import_sources(wildcards.version)[wildcards.source]
    return DEMO_SUMMARY if source_for_slug(slug).is_demo else []


def source_summary(wildcards):
    """What a query waits for: the demo or atlas it reads, built (by this run, when it builds them)."""
    source = source_of(wildcards)
    summary = source.summary
    return str(summary.relative_to(Path.cwd().resolve())) if summary else []


def storage_of(spec):
    """The storage settings a query's source is read with: none apply to the local demo (its files are read
    in place), so changing them reruns nothing there."""
    source = source_for(spec, DEMO)
    local = (source.atlas and not source.atlas.data_root) or (
        source.is_demo and DEMO.storage_kind == "local"
    )
    return STORAGE_DEFAULTS if local else STORAGE


def needs_preflight(spec):
    """Check a spec against the registry once, in the main process, when `resolve` has not accepted it yet
    (with these storage settings: a new cache directory may lack the room).

    The embedded demo is checked once it is built (a run that builds it checks the spec in `resolve`).
    """
    if not workflow.is_main_process:
        return False
    files = QueryFiles(spec.name)
    # every run's steps would fail on a damaged one
    discard_if_damaged(files.query, files.manifest, files.receipt)
    source = source_for(spec, DEMO)
    if source.summary and not source.summary.exists() and being_built(source):
        return False
    resolved = files.query
    if not resolved.exists():
        return True
    accepted = json.loads(resolved.read_text())
    changed = accepted["spec_digest"] != spec.digest
    return changed or accepted["storage"] != storage_of(spec)


def being_built(source):
    """Whether this run builds the source: the demo, or the atlas it ingests."""
    ingested = ATLAS_SPEC.name if ATLAS_SPEC else None
    return source.is_demo or (
        source.atlas is not None and source.atlas.name == ingested
    )


def check_registries():
    """Name a damaged or locked registry before any job reads or writes it."""
    if TARGET.is_embedded:
        TARGET.embedded.check_database("target")
    if Path(DEMO_SUMMARY).exists():
        DEMO.instance.check_database("demo")


def started_build():
    """The build's checked specs, the demo's object server running first (the check reads its store)."""
    if (
        workflow.is_main_process
    ):  # the jobs inherit it: their resolve may reuse what the check found
        os.environ[RUN_VARIABLE] = uuid.uuid4().hex
    if (
        workflow.is_main_process
        and DEMO.storage_kind == "s3"
        and (DEMO.root / "s3").exists()
    ):
        DEMO.object_server.ensure_running()  # it outlives the run; stopped by its PID
    DEMO.check_format()
    DEMO.check_seed(config["demo_seed"])
    if workflow.is_main_process:
        check_registries()
    entries = config["query"] or config["queries"]
    base = Path(workflow.basedir)
    owners = (  # asked once, by the main process; a job's re-parse needs no answer
        (lambda keys: latest_owners(TARGET, Path.cwd(), config, keys))
        if workflow.is_main_process
        else (lambda keys: {})
    )
    return checked_build(
        entries, base, DEMO, STORAGE, needs_preflight, owners, storage_of
    )


with one_line_exit():  # one line per problem, before any job runs
    SPECS, KEEP_CHECKED = started_build()
if workflow.is_main_process:
    outdate_unfinished_build(list(SPECS))
FILES = QueryFiles("{query}")  # every rule's files, as patterns over the query's name


wildcard_constraints:
    query="|".join(re.escape(name) for name in SPECS),


RUN_STARTED = (
    time.time()
)  # a query's summary is printed when this run wrote its receipt
if workflow.is_main_process:
    with one_line_exit():
        WORKDIR_CLAIM = claim_workdir(Path(".snakemake"))


def spec_of(wildcards):
    return SPECS[wildcards.query]


def source_of(wildcards):
    """The instance a query reads (its spec's `source.instance`)."""
    return source_for(spec_of(wildcards), DEMO)


def target_made(wildcards):
    """The embedded target, made before the first step that writes into it (a user's own exists)."""
    return str(TARGET.receipt) if TARGET.is_embedded else []


def manifest_table(query):
    """A query's resolve checkpoint manifest (re-evaluated by Snakemake once the checkpoint has run)."""
    return read_manifest(checkpoints.resolve.get(query=query).output.manifest)


def shard_members(query):
    """Artifacts per shard job of a query, in manifest order (see cellquery.query.shards.plan_shards)."""
    return plan_shards(manifest_table(query), config["shard_size"])


def shard_uids(wildcards):
    return shard_members(wildcards.query)[int(wildcards.shard)]


def shards(wildcards):
    members = shard_members(wildcards.query)
    return [QueryFiles(wildcards.query).shard(n) for n in range(len(members))]


def exports(wildcards):
    """The result's other formats the spec asks for (`output.formats`), registered with it."""
    files = QueryFiles(wildcards.query)
    return [files.tracked_export(fmt) for fmt in spec_of(wildcards).export_formats]


def shard_memory_mb(wildcards):
    """A shard holds one slice at a time: budget from its largest file, bounded."""
    table = manifest_table(wildcards.query)
    largest = table.loc[table["uid"].isin(shard_uids(wildcards)), "size"].max()
    return min(16000, 1000 + int(largest) // 2**20)
