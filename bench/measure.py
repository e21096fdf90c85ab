"""Run a command; print its peak RSS (largest process, MiB) as JSON on the last line; exit as it did."""

import json
import resource
import subprocess
import sys

completed = subprocess.run(sys.argv[1:])
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"peak_rss_mib": round(peak_kib / 1024)}))
sys.exit(completed.returncode)
