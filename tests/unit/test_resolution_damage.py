"""A query's `resolve` outputs read back: query.json by its keys, the manifest by the digest query.json
holds, so a manifest cut even at a row boundary (rows silently missing) is found."""

from __future__ import annotations

import json

from cellquery.query.runfiles import MANIFEST_DIGEST, QUERY_KEYS, file_digest, resolution_damage


def resolution(tmp_path, rows: int = 3):
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("uid\tkey\n" + "".join(f"u{n}\tk{n}\n" for n in range(rows)))
    query = tmp_path / "query.json"
    query.write_text(json.dumps(dict.fromkeys(QUERY_KEYS, "") | {MANIFEST_DIGEST: file_digest(manifest)}))
    return query, manifest


def test_sound_or_absent_outputs_are_no_damage(tmp_path):
    assert resolution_damage(tmp_path / "query.json", tmp_path / "manifest.tsv") is None
    assert resolution_damage(*resolution(tmp_path)) is None


def test_a_manifest_cut_at_a_row_boundary_is_damage(tmp_path):
    query, manifest = resolution(tmp_path)
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))
    assert resolution_damage(query, manifest) == f"{manifest}: its content is not what resolve wrote"


def test_a_query_cut_short_or_without_its_keys_is_damage(tmp_path):
    query, manifest = resolution(tmp_path)
    query.write_text(query.read_text()[:20])
    assert resolution_damage(query, manifest).startswith(f"{query}: Unterminated string")
    query.write_text(json.dumps({"name": "x"}))
    assert resolution_damage(query, manifest) == f"{query}: lacks {', '.join(QUERY_KEYS[1:])}"
