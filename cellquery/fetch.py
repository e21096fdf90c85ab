"""Fetch artifacts from object storage: once per machine, resumed after faults, checked before use.

A copy is written to a private `.part` file under a per-artifact lock and renamed into place only when its
size and hash equal the registry's, so no job ever reads a half-written copy and jobs or runs that want the
same artifact at once download it once. lamindb's own `cache()` trusts modification times only; this does not.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cellquery.atomic import out_of_space
from cellquery.errors import FetchError
from cellquery.storage import CHUNK

log = logging.getLogger(__name__)

ATTEMPTS = 8  # reads that fail in a row before a download gives up (backoff: about 2 minutes)
BACKOFF = 1.0  # seconds before the first retry, doubled after each
PROGRESS_EVERY = 5.0  # seconds between progress lines in the job log


@contextmanager
def artifact_lock(path: Path) -> Iterator[None]:
    """One process at a time per cached file (a lock the kernel drops when its holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cached_copy(entry, cache_path: Path, fs, remote: str) -> Path:
    """The artifact of manifest row `entry` at `cache_path`, downloaded unless an intact copy is there.

    A copy that does not match the registry is downloaded once more, then the fetch fails with one line.
    """
    label = f"artifact {entry['uid']} ({entry['key']})"
    with artifact_lock(cache_path):
        if intact(cache_path, entry):
            log.info("%s: cached copy %s is intact", label, cache_path)
            return cache_path
        part = cache_path.with_name(f"{cache_path.name}.part")
        for attempt in (1, 2):
            download(fs, remote, part, int(entry["size"]), label)
            if intact(part, entry):
                part.replace(cache_path)
                return cache_path
            log.warning("%s: downloaded copy does not match its registry hash (attempt %d)", label, attempt)
            part.unlink()
    raise FetchError(f"{label}: the copy of {remote} does not match its registry size and hash")


def intact(path: Path, entry) -> bool:
    """The file exists with the registry's size and hash (lamindb's hash, as `Artifact.hash` holds it)."""
    from lamindb_setup.core.hashing import hash_file

    return path.exists() and path.stat().st_size == int(entry["size"]) and hash_file(path)[1] == entry["hash"]


def download(fs, remote: str, part: Path, size: int, label: str) -> None:
    """Copy `remote` into `part`, resuming from what `part` already holds, retrying with backoff."""
    failures, wait = 0, BACKOFF
    started = last_report = time.monotonic()
    while True:
        done = part.stat().st_size if part.exists() else 0
        if done >= size:
            elapsed = time.monotonic() - started
            log.info(
                "%s: %.1f MB in %.1f s (%.1f MB/s)",
                label,
                size / 1e6,
                elapsed,
                size / 1e6 / max(elapsed, 1e-9),
            )
            return
        try:
            with open(part, "ab") as sink:
                for chunk in object_bytes(fs, remote, done):
                    sink.write(chunk)
                    done += len(chunk)
                    failures, wait = 0, BACKOFF
                    if time.monotonic() - last_report >= PROGRESS_EVERY:
                        last_report = time.monotonic()
                        rate = done / max(last_report - started, 1e-9) / 1e6
                        log.info("%s: %.1f of %.1f MB (%.1f MB/s)", label, done / 1e6, size / 1e6, rate)
                    if done >= size:
                        break
            if done < size:
                raise OSError(f"{remote}: the server ended the file at {done} of {size} bytes")
        except PermissionError as error:  # wrong or missing credentials: no retry mends that
            raise refused(label, remote, error) from None
        except Exception as error:  # s3fs, botocore and aiohttp raise many kinds: all others are retried
            if out_of_space(error):
                part.unlink(missing_ok=True)
                raise FetchError(
                    f"{label}: no space left on the disk of {part.parent}; set cache_dir to a larger disk"
                ) from None
            failures += 1
            if failures >= ATTEMPTS:
                raise FetchError(
                    f"{label}: download of {remote} failed {failures} times in a row ({reason(error)})"
                ) from None
            log.warning("%s: %s; retrying in %.0f s (%d/%d)", label, reason(error), wait, failures, ATTEMPTS)
            time.sleep(wait)
            wait *= 2


def object_bytes(fs, remote: str, offset: int) -> Iterator[bytes]:
    """An object's bytes from `offset` on, from one streamed GET (as s3fs's `get_file` reads; one ranged
    request per chunk would spend most of a fast link's time on requests)."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(remote)
    response = fs.call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={offset}-")
    body = response["Body"]
    try:
        while chunk := sync(fs.loop, body.read, CHUNK):
            yield chunk
    finally:
        body.close()


def refused(label: str, remote: str, error: PermissionError) -> FetchError:
    """Wrong or missing credentials: one line naming the artifact and the object."""
    return FetchError(f"{label}: {remote} refused access ({reason(error)}); check the credentials")


def reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
