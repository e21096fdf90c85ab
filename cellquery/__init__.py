"""cellquery: a YAML query over CELLxGENE-style data, built into a validated, versioned dataset."""

import os
import sys

# anndata 0.11 imports torch whenever it is installed (anndata.experimental's AnnLoader): 2.8 s and 235 MiB
# more in every process. Workflow jobs never train: the Snakefile calls `without_torch()`, so they run as in
# an environment without torch; the training loaders (cellquery.training) run in processes of their own.
WITHOUT_TORCH = "CELLQUERY_WITHOUT_TORCH"


def without_torch() -> None:
    """This process, and every process it starts, runs as if torch were not installed."""
    os.environ[WITHOUT_TORCH] = "1"
    sys.modules.setdefault("torch", None)


if os.environ.get(WITHOUT_TORCH) == "1":
    without_torch()
