"""cellquery: a YAML query over CELLxGENE-style data, built into a validated, versioned dataset."""

import os
import sys

# anndata 0.11 imports torch whenever it is installed (anndata.experimental's AnnLoader): 2.8 s and 235 MiB
# more in every process. Workflow jobs never train, so the Snakefile sets this and their processes run as
# in an environment without torch; the training loaders (cellquery.training) run without it.
if os.environ.get("CELLQUERY_WITHOUT_TORCH") == "1":
    sys.modules.setdefault("torch", None)
