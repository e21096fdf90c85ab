"""Registration recovery (`registration.recover`) on a real LaminDB instance made in a temporary directory:
what a killed `register` left is undone, a committed registration is kept."""

from __future__ import annotations

from unit_helpers import TEMPORARY_INSTANCE, in_temporary_instance

SCRIPT = (
    TEMPORARY_INSTANCE
    + """
import json
from pathlib import Path

from cellquery.query.registration import recover

storage_root = str(ln.settings.storage.root)


def saved(name):
    path = root / f"{name}.txt"
    path.write_text(name)
    return ln.Artifact(path, key=f"{name}.txt").save()


def recovered(uid):
    intent = root / "intent.json"
    intent.write_text(json.dumps({"uid": uid, "storage_root": storage_root}))
    recover(ln, intent)
    return not intent.exists()


kept, lost = saved("committed"), saved("file-lost")
Path(lost.path).unlink()  # the record committed, its stored file gone
stray = Path(storage_root, ".lamindb", "StrayUid0000000000000.txt")
stray.write_text("stored, never committed")
print(json.dumps({
    "committed_kept": recovered(kept.uid) and ln.Artifact.filter(uid=kept.uid).exists(),
    "lost_removed": recovered(lost.uid) and not ln.Artifact.filter(uid=lost.uid).exists(),
    "stray_removed": recovered("StrayUid0000000000000") and not stray.exists(),
    "nothing_to_do": recover(ln, root / "absent.json") is None,
}))
"""
)


def test_recovery_undoes_what_a_killed_registration_left_and_keeps_a_committed_one(tmp_path):
    assert in_temporary_instance(SCRIPT, tmp_path) == {
        "committed_kept": True,
        "lost_removed": True,
        "stray_removed": True,
        "nothing_to_do": True,
    }
