"""Another instance's artifacts as records of this one, zero-copy, as lamindb's transfer records them: the
same uid, key and hash, pointing at the source's files in a storage location the source owns (so this
instance never writes there)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def bare_artifact(ln, row: dict, source: dict):
    """An artifact record with the source's identity and file, built field by field (no file is read)."""
    key = row["key"]
    n_obs = row.get("n_obs", "")
    fields = {
        "uid": row["uid"],
        "key": key,
        "description": row.get("title") or None,
        "suffix": Path(key).suffix if row.get("otype") != "tiledbsoma" else "",
        "otype": row.get("otype", "AnnData"),
        "size": int(row["size"]),
        "hash": row["hash"],
        "_hash_type": row.get("hash_type") or None,
        "n_files": int(row["n_files"]) if row.get("n_files") not in (None, "") else None,
        "n_observations": int(n_obs) if n_obs not in (None, "") and not pd.isna(n_obs) else None,
        "version_tag": str(row.get("version") or "") or None,
        "storage_id": storage_record(ln, row, source).id,
        "_key_is_virtual": str(row.get("key_is_virtual")) == "True",
        "_overwrite_versions": row.get("otype") == "tiledbsoma",
    }
    return ln.Artifact(*[fields.pop(f.attname, f.get_default()) for f in ln.Artifact._meta.concrete_fields])


def storage_record(ln, row: dict, source: dict):
    """The source's storage location as a record of the target (found by uid or root, else made)."""
    existing = (
        ln.Storage.filter(uid=row["storage_uid"]).first()
        or ln.Storage.filter(root=row["storage_root"]).first()
    )
    if existing is not None:
        return existing
    root = row["storage_root"]
    return ln.Storage(
        uid=row["storage_uid"],
        root=root,
        type="s3" if root.startswith("s3://") else "local",
        region=row["storage_region"] or None,
        instance_uid=row["storage_instance_uid"] or source["uid"],
        _skip_preparation=True,
    ).save()
