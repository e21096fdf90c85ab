"""The output key rules (`registration.check_key_rules`) agree with lamindb itself: every key they accept,
lamindb registers a file under; every key they refuse for its form, lamindb refuses."""

from __future__ import annotations

from unit_helpers import TEMPORARY_INSTANCE, in_temporary_instance

KEYS = [
    "cellquery/t-cells.h5ad",
    "a/b.c.h5ad",
    "x.h5ad.h5ad",
    "cellquery/../t-cells.h5ad",
    "./t-cells.h5ad",
    "cellquery/./t-cells.h5ad",
    "cellquery\\t-cells.h5ad",
    "cellquery/.h5ad",
    ".h5ad",
]
SCRIPT = (
    TEMPORARY_INSTANCE
    + f"""
import json
from lamindb.errors import InvalidArgument
from cellquery.errors import SpecError
from cellquery.query.registration import check_key_rules
from cellquery.spec.query_spec import load_spec

data = root / "data.h5ad"
data.write_bytes(b"not read: lamindb checks the key when the record is made")
verdicts = {{}}
for number, key in enumerate({KEYS!r}):
    spec_path = root / f"spec{{number}}.yaml"
    spec_path.write_text(json.dumps({{"name": "k", "organism": "human", "output": {{"key": key}}}}))
    try:
        check_key_rules(load_spec(spec_path))
        ours = True
    except SpecError:
        ours = False
    try:
        ln.Artifact(data, key=key, description="key rules")
        theirs = True
    except (ValueError, InvalidArgument):
        theirs = False
    verdicts[key] = [ours, theirs]
longest = ln.Artifact._meta.get_field("key").max_length
print(json.dumps({{"verdicts": verdicts, "longest": longest}}))
"""
)


def test_the_key_rules_are_lamindbs(tmp_path):
    outcome = in_temporary_instance(SCRIPT, tmp_path)
    disagree = {key: pair for key, pair in outcome["verdicts"].items() if pair[0] != pair[1]}
    assert not disagree, disagree
    accepted = [key for key, (ours, _) in outcome["verdicts"].items() if ours]
    assert accepted == ["cellquery/t-cells.h5ad", "a/b.c.h5ad", "x.h5ad.h5ad"]
    assert outcome["longest"] == 1024
