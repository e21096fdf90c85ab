"""Integrity as the registry records it: a file checked against the hash lamindb derived for it.

lamindb hashes a file it stores itself with `hash_file` (`md5` up to 50 MiB, else `sha1-fl`: the first and
last 50 MiB), but takes the hash of a file registered in place on S3 from the object's ETag
(`get_stat_file_cloud`): `md5` for a single-part upload, `md5-<parts>` for a multipart one, the MD5 of the
parts' MD5s. The part size is not recorded: the server's (a HEAD of part 1) and those common uploaders use
are tried. Hashes are base64url without padding, 22 characters. The MD5 types are computed from a download's
bytes as they are written (`Digest`), the others by reading the file. A copy once verified is recorded in a
sidecar (`<name>.verified`: size, inode, mtime, ctime, hash) so that it is not hashed again while untouched.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cellquery.files.atomic import write_json

MiB = 2**20
HASH_LENGTH = 22  # lamindb_setup.core.hashing.HASH_LENGTH
LAMIN_CHUNK = 50 * MiB  # hash_file's chunk: a file up to this size is hashed `md5`, a larger one `sha1-fl`
# rclone and the AWS SDKs' minimum, aws cli and boto3, s3cmd, mc, s3fs and s5cmd, larger settings seen in use
PART_SIZES = tuple(n * MiB for n in (5, 8, 10, 15, 16, 32, 50, 64, 100, 128, 256, 512, 1024))
READ = 8 * MiB  # bytes per read when a file is hashed


def hash_type_of(entry) -> str:
    """The registry's hash type of a manifest row; a manifest written before the `hash_type` column holds
    lamindb's local hash (`hash_file`), whose type follows from the size."""
    recorded = entry.get("hash_type")
    if isinstance(recorded, str) and recorded:
        return recorded
    return "md5" if int(entry["size"]) <= LAMIN_CHUNK else "sha1-fl"


def parts_of(hash_type: str) -> int | None:
    """The part count of an `md5-<parts>` hash type (None for any other type)."""
    prefix, _, parts = hash_type.partition("-")
    return int(parts) if prefix == "md5" and parts.isdigit() else None


def is_md5(hash_type: str) -> bool:
    """Hash types computed from the bytes as they arrive: `md5`, `md5-<parts>`."""
    return hash_type == "md5" or parts_of(hash_type) is not None


def encoded(digest: bytes) -> str:
    """A digest as lamindb writes it (`to_b64_str`, cut to 22 characters)."""
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:HASH_LENGTH]


def etag_hash(etag: str) -> tuple[str, str]:
    """(hash, hash type) lamindb derives from an S3 ETag when it registers an object in place."""
    digest, _, parts = etag.strip('"=').partition("-")
    return encoded(bytes.fromhex(digest)), f"md5-{parts}" if parts else "md5"


def etag_disagrees(etag: str, entry) -> str | None:
    """What an object's ETag says when it proves the object is not the one registered, else None.

    An `md5-<parts>` hash was read from the ETag: any other ETag differs. An `md5` hash is lamindb's or a
    single-part ETag: a single-part ETag must equal it (a multipart one, of a file lamindb hashed and uploaded
    itself, says nothing). Other types say nothing about ETags.
    """
    found, found_type = etag_hash(etag)
    expected, expected_type = entry["hash"], hash_type_of(entry)
    if not expected or not is_md5(expected_type) or (expected_type == "md5" and found_type != "md5"):
        return None
    if (found, found_type) == (expected, expected_type):
        return None
    return f"its ETag gives hash {found} ({found_type}), the registry {expected} ({expected_type})"


def part_sizes(size: int, parts: int, reported: int | None = None) -> list[int]:
    """The part sizes that cut `size` bytes into `parts` parts: the server's, then common uploaders'."""
    candidates = dict.fromkeys(p for p in (reported, *PART_SIZES) if p)
    return [p for p in candidates if -(-size // p) == parts]


class _Parts:
    """The MD5s of consecutive parts of one size."""

    def __init__(self, size: int):
        self.size, self.digests, self.current, self.filled = size, [], hashlib.md5(), 0

    def update(self, data: memoryview) -> None:
        while data:
            take = min(len(data), self.size - self.filled)
            self.current.update(data[:take])
            self.filled, data = self.filled + take, data[take:]
            if self.filled == self.size:
                self.digests.append(self.current.digest())
                self.current, self.filled = hashlib.md5(), 0

    def value(self) -> str:
        last = [self.current.digest()] if self.filled else []
        return encoded(hashlib.md5(b"".join(self.digests + last)).digest())


class Digest:
    """A file's hash of an MD5 type, computed from its bytes in order (for `md5-<parts>`, once per part size
    that fits the file's size and part count)."""

    def __init__(self, hash_type: str, size: int, part_size: int | None = None):
        self.hash_type, self.size, self.part_size = hash_type, size, part_size
        self._start()

    def _start(self) -> None:
        parts, self.offset = parts_of(self.hash_type), 0
        self.whole = hashlib.md5() if parts is None else None
        sizes = part_sizes(self.size, parts, self.part_size) if parts else []
        self.parts = [_Parts(p) for p in sizes]

    def update(self, data: bytes) -> None:
        self.offset += len(data)
        if self.whole is not None:
            self.whole.update(data)
        for parts in self.parts:
            parts.update(memoryview(data))

    def sync(self, path: Path) -> None:
        """Hash what `path` holds unless this has hashed exactly that much (a download resumed elsewhere)."""
        held = path.stat().st_size if path.exists() else 0
        if held != self.offset:
            self._start()
            if held:
                read_into(self, path)

    def hashes(self) -> dict[str, str]:
        """Each hash this computed, by how: {"": md5} or {"8 MiB parts": hash, ...}."""
        if self.whole is not None:
            return {"": encoded(self.whole.digest())}
        return {f"{p.size / MiB:g} MiB parts": p.value() for p in self.parts}


def read_into(digest: Digest, path: Path) -> Digest:
    with open(path, "rb") as source:
        while chunk := source.read(READ):
            digest.update(chunk)
    return digest


def file_hashes(path: Path, entry, part_size: int | None = None) -> dict[str, str]:
    """The hashes of the file at `path` of the registry's hash type (read once), by how they were computed."""
    hash_type = hash_type_of(entry)
    if is_md5(hash_type):
        return read_into(Digest(hash_type, int(entry["size"]), part_size), path).hashes()
    if hash_type == "sha1-fl":
        from lamindb_setup.core.hashing import hash_file

        return {"": hash_file(path)[1]}
    return {}


def mismatch(path: Path, entry, digest: Digest | None = None) -> str | None:
    """None when the file at `path` has the registry's size and hash, else what differs (one phrase).

    `digest` holds the file's bytes hashed as they were written (no second read). A registry without a hash
    leaves the size to check.
    """
    size, expected, hash_type = path.stat().st_size, entry["hash"], hash_type_of(entry)
    if size != int(entry["size"]):
        return f"{size} bytes, the registry {int(entry['size'])}"
    found = digest.hashes() if digest is not None else file_hashes(path, entry)
    if not expected or expected in found.values():
        return None
    if not found:
        what = "no part size tried fits" if parts_of(hash_type) else "cellquery cannot compute it"
        return f"hash type {hash_type} of registry hash {expected}: {what}"
    how, value = next(iter(found.items()))
    return f"hash {value}{f' ({how})' if how else ''}, the registry {expected} ({hash_type})"


def intact(path: Path, entry) -> bool:
    """The file exists with the registry's size and hash."""
    return path.exists() and mismatch(path, entry) is None


def sidecar(path: Path) -> Path:
    return path.with_name(f"{path.name}.verified")


def _stamp(path: Path, entry) -> dict:
    return {"file": _identity(path), "hash": entry["hash"], "hash_type": hash_type_of(entry)}


def record_verified(path: Path, entry) -> None:
    """Note that `path` was found to match the registry (written beside it, atomically)."""
    write_json(sidecar(path), _stamp(path, entry))


def verified(path: Path, entry) -> bool:
    """`path` matches the registry: recorded so for this very file (untouched since: same inode, size,
    modification and change times), or hashed now and then recorded."""
    if not path.exists():
        return False
    try:
        if json.loads(sidecar(path).read_text()) == _stamp(path, entry):
            return True
    except (OSError, ValueError):
        pass
    if mismatch(path, entry) is not None:
        return False
    record_verified(path, entry)
    return True


def seal(path: Path) -> None:
    """Record a file the pipeline wrote whole and reads back later (a slice): its sha256 and identity
    beside it (`<name>.sealed`), written after it."""
    write_json(_seal_of(path), {"sha256": _sha256(path), "file": _identity(path)})


def sealed(path: Path) -> bool:
    """The file is as it was sealed: untouched since (its identity unchanged), or hashed now to the digest
    it was sealed with (a copy, a touch). A file cut short, altered or never sealed is not."""
    try:
        seal_record = json.loads(_seal_of(path).read_text())
        if seal_record["file"] == _identity(path):
            return True
        return seal_record["sha256"] == _sha256(path)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _seal_of(path: Path) -> Path:
    return path.with_name(f"{path.name}.sealed")


def _identity(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
