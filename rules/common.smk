from pathlib import Path

from snakemake.utils import validate

from cellquery.demo.build import shards
from cellquery.demo.catalog import V1, V2
from cellquery.lamin import DemoInstance
from cellquery.pipeline import read_manifest
from cellquery.spec import load_spec

validate(config, "../config/schemas/config.schema.yaml")

SCALE = config["demo_scale"]
DEMO = DemoInstance(Path.cwd(), SCALE, config["demo_db_url"] or None)
DEMO_DIR = f".demo/{SCALE}"
DEMO_SUMMARY = f"{DEMO_DIR}/summary.json"
N_SHARDS = len(shards(SCALE))


def query_path(value):
    """A relative spec path is looked up in the working directory, then beside the Snakefile."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return Path(workflow.basedir) / path


QUERY = load_spec(query_path(config["query"]))
RESULTS = f"results/{QUERY.name}"


def manifest_table():
    """The resolve checkpoint's manifest (re-evaluated by Snakemake once the checkpoint has run)."""
    return read_manifest(checkpoints.resolve.get().output.manifest)


def manifest_row(uid):
    table = manifest_table()
    return table.loc[table["uid"] == uid].iloc[0]


def slices(wildcards):
    return expand(f"{RESULTS}/slices/{{uid}}.h5ad", uid=manifest_table()["uid"])


def slice_memory_mb(uid):
    """Slices hold the selected rows only: budget from the file size, bounded."""
    return min(16000, 1000 + int(manifest_row(uid)["size"]) // 2**20)
