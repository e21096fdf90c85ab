import json
import sys
import time
from pathlib import Path

from snakemake.utils import validate

from cellquery.demo.catalog import V1, V2, generation_batches
from cellquery.jobs import claim_workdir
from cellquery.lamin import DemoInstance, export_object_storage_env
from cellquery.pipeline import RESOLVED_FORMAT, plan_shards, preflight, read_manifest
from cellquery.spec import SpecError, load_spec
from cellquery.storage import STORAGE_DEFAULTS

validate(config, "../config/schemas/config.schema.yaml")

SCALE = config["demo_scale"]
DEMO = DemoInstance(
    Path.cwd(), SCALE, config["demo_db_url"] or None, config["demo_storage"]
)
DEMO_DIR = f".demo/{DEMO.dirname}"
DEMO_LOGS = f"logs/demo/{DEMO.dirname}"
# what every job that reads the data uses: where downloads go, how to reach object storage
STORAGE = {key: config[key] for key in STORAGE_DEFAULTS}
DEMO_SUMMARY = f"{DEMO_DIR}/summary.json"
N_BATCHES = len(generation_batches(SCALE))


def query_path(value):
    """A relative spec path is looked up in the working directory, then beside the Snakefile."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return Path(workflow.basedir) / path


def needs_preflight(spec):
    """Check a spec against the registry once, in the main process, when `resolve` has not accepted it yet
    (with these storage settings: a new cache directory may lack the room).

    The embedded demo is checked once it is built (a run that builds it checks the spec in `resolve`).
    """
    if not workflow.is_main_process or (
        spec.instance == "demo" and not Path(DEMO_SUMMARY).exists()
    ):
        return False
    resolved = Path(f"results/{spec.name}/query.json")
    if not resolved.exists():
        return True
    accepted = json.loads(resolved.read_text())
    return accepted["spec_digest"] != spec.digest or accepted["storage"] != STORAGE


export_object_storage_env(DEMO)
try:
    QUERY = load_spec(query_path(config["query"]))
    if needs_preflight(QUERY):
        preflight(QUERY, DEMO, STORAGE)
except SpecError as error:  # one line per problem, before any job runs
    print(
        "\n".join(f"cellquery: {problem}" for problem in error.problems),
        file=sys.stderr,
    )
    sys.exit(1)
RESULTS = f"results/{QUERY.name}"
RUN_STARTED = time.time()  # the run summary is printed when this run wrote the receipt
if workflow.is_main_process:
    WORKDIR_CLAIM = claim_workdir(Path(".snakemake"))
    if DEMO.storage_kind == "s3" and (DEMO.root / "s3").exists():
        DEMO.object_server.ensure_running()  # it outlives the run; stopped by its PID


def manifest_table():
    """The resolve checkpoint's manifest (re-evaluated by Snakemake once the checkpoint has run)."""
    return read_manifest(checkpoints.resolve.get().output.manifest)


def shard_members():
    """Artifacts per shard job, in manifest order (see cellquery.pipeline.plan_shards)."""
    return plan_shards(manifest_table(), config["shard_size"])


def shard_uids(shard):
    return shard_members()[shard]


def shards(wildcards):
    return expand(f"{RESULTS}/shards/{{shard}}.json", shard=range(len(shard_members())))


def shard_memory_mb(shard):
    """A shard holds one slice at a time: budget from its largest file, bounded."""
    table = manifest_table()
    largest = table.loc[table["uid"].isin(shard_uids(shard)), "size"].max()
    return min(16000, 1000 + int(largest) // 2**20)
