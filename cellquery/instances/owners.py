"""Which query the results under an output key belong to: a spec may not take over another query's results
(a copied spec, renamed, its output key left as it was) unless it says it continues them (`output.continues`).

`register` asks the target itself before it saves (`takeover`), and keeps an index of the latest owner of each
key beside an embedded target (`owners.json`), which the spec check reads before any job. A user's own target
is asked in a process of its own instead (this one is connected to the source): `python -m
cellquery.instances.owners PROJECT CONFIG KEYS`.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

from cellquery.errors import SourceError, UserError
from cellquery.files.atomic import write_json
from cellquery.spec.query_spec import QuerySpec

INDEX = "owners.json"


def latest_owners(target, project: Path, config: dict, keys: list[str]) -> dict[str, dict]:
    """Per output key the target holds results under: the query name and spec file of its latest version."""
    if target.is_embedded:
        index = target.embedded.root / INDEX
        known = json.loads(index.read_text()) if index.exists() else {}
        return {key: known[key] for key in keys if key in known}
    command = [
        sys.executable,
        "-m",
        "cellquery.instances.owners",
        str(project),
        json.dumps(config),
        json.dumps(keys),
    ]
    environment = {**os.environ, **target.settings_env()}
    found = subprocess.run(command, capture_output=True, text=True, env=environment)
    if found.returncode != 0:
        tail = found.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SourceError(f"asking the target who owns the output keys failed: {tail[0]}")
    return json.loads(found.stdout.strip().splitlines()[-1])


def takeover(spec: QuerySpec, owner: dict | None) -> str | None:
    """The problem of a spec registering under another query's results, in one line (None: it may)."""
    if not owner or owner["query"] in (spec.name, spec.continues):
        return None
    where = f" (spec {owner['spec']})" if owner.get("spec") else ""
    return (
        f"output.key: {spec.output_key!r} holds the results of query {owner['query']!r}{where}; choose "
        f"another key, or write `continues: {owner['query']}` under output to add a version to them"
    )


def check_owner(ln, spec: QuerySpec) -> None:
    """Refuse, in one line, to add a version to another query's results (asked of the target itself)."""
    if problem := takeover(spec, owners_in(ln, [spec.output_key]).get(spec.output_key)):
        raise UserError(problem)


def record_owner(target, spec: QuerySpec) -> None:
    """The index beside an embedded target: this spec owns the latest version under its output key."""
    if not target.is_embedded:
        return
    index = target.embedded.root / INDEX
    with open(index.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known = json.loads(index.read_text()) if index.exists() else {}
        known[spec.output_key] = {"query": spec.name, "spec": str(spec.path.resolve())}
        write_json(index, known)


def owners_in(ln, keys: list[str]) -> dict[str, dict]:
    found = {}
    for key in keys:
        latest = ln.Artifact.filter(key=key).order_by("-created_at").first()
        values = latest.features.get_values() if latest is not None else {}
        if values.get("query_name"):  # a version registered without its query's name claims nothing
            found[key] = {"query": values["query_name"], "spec": values.get("spec_file", "")}
    return found


def main() -> None:
    from cellquery.instances.target import Target

    project, config, keys = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
    ln = Target.from_config(config, project).connect()
    print(json.dumps(owners_in(ln, keys)))


if __name__ == "__main__":
    main()
