from pathlib import Path

from snakemake.utils import validate

from cellquery.demo.build import shards
from cellquery.demo.catalog import V1, V2
from cellquery.lamin import DemoInstance

validate(config, "../config/schemas/config.schema.yaml")

SCALE = config["demo_scale"]
DEMO = DemoInstance(Path.cwd(), SCALE, config["demo_db_url"] or None)
DEMO_DIR = f".demo/{SCALE}"
DEMO_SUMMARY = f"{DEMO_DIR}/summary.json"
N_SHARDS = len(shards(SCALE))
