"""Fetch artifacts from object storage: once per machine, resumed after faults, checked before use.

A copy is written to a private `.part` file under a per-artifact lock and renamed into place only when its
size and hash equal the registry's (`cellquery.storage.integrity`), so no job ever reads a half-written copy
and jobs or runs that want the same artifact at once download it once. lamindb's own `cache()` trusts
modification times only; this does not.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cellquery.errors import FetchError
from cellquery.files.atomic import out_of_space
from cellquery.storage import integrity
from cellquery.storage.settings import CHUNK, DOWNLOAD_PATIENCE_S, refusal, refused_hint

log = logging.getLogger(__name__)

BACKOFF = 1.0  # seconds before the first retry, doubled after each
PROGRESS_EVERY = 5.0  # seconds between progress lines in the job log


class Patience:
    """Reads that fail in a row are retried after waits doubling from `BACKOFF`, until `seconds` (the config's
    `download_patience_s`) have been spent waiting; a read that succeeds starts the count again."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.restart()

    def restart(self) -> None:
        self.failures, self.waited, self.wait = 0, 0.0, BACKOFF

    def wait_after(self, error: BaseException, what: str, label: str) -> None:
        """Sleep before the next try of `what` after `error`; a FetchError once patience is spent."""
        self.failures += 1
        wait = min(self.wait, self.seconds - self.waited)
        if wait <= 0:
            tries = f"{self.failures} times in a row over {self.waited:.0f} s"
            raise FetchError(
                f"{label}: {what} failed {tries} ({reason(error)}); "
                f"download_patience_s ({self.seconds:g}) sets how long to wait for the store"
            ) from None
        log.warning(
            "%s: %s; %s again in %.0f s (try %d)", label, reason(error), what, wait, self.failures + 1
        )
        time.sleep(wait)
        self.waited, self.wait = self.waited + wait, self.wait * 2


@contextmanager
def artifact_lock(path: Path) -> Iterator[None]:
    """One process at a time per cached file (a lock the kernel drops when its holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cached_copy(entry, cache_path: Path, fs, remote: str, patience_s: float = DOWNLOAD_PATIENCE_S) -> Path:
    """The artifact of manifest row `entry` at `cache_path`, downloaded unless a verified copy is there.

    The object's ETag is checked against the registry before the download, the bytes hashed as they are
    written; an object changed since its registration, or a copy that does not match, stops the fetch with one
    line and nothing kept.
    """
    label = f"artifact {entry['uid']} ({entry['key']})"
    with artifact_lock(cache_path):
        if integrity.verified(cache_path, entry):
            log.info("%s: cached copy %s is intact", label, cache_path)
            return cache_path
        discard(cache_path)
        part = cache_path.with_name(f"{cache_path.name}.part")
        digest = checked_digest(fs, remote, entry, label, part)
        download(fs, remote, part, int(entry["size"]), label, Patience(patience_s), digest)
        problem = integrity.mismatch(part, entry, digest)
        if problem:
            part.unlink()
            raise FetchError(
                f"{label}: the copy of {remote} does not match the registry ({problem}); not kept"
            )
        part.replace(cache_path)
        integrity.record_verified(cache_path, entry)
        return cache_path


def discard(path: Path) -> None:
    """Remove a cached copy that does not match the registry, and its verification record."""
    path.unlink(missing_ok=True)
    integrity.sidecar(path).unlink(missing_ok=True)


def checked_digest(fs, remote: str, entry, label: str, part: Path) -> integrity.Digest | None:
    """The digest a download into `part` feeds, once the object's ETag was found consistent with the registry
    (a HEAD of part 1, which also tells the part size of a multipart upload); None for a hash computed from
    the file. An object changed since its registration: one line, and a partial copy of it removed."""
    hash_type = integrity.hash_type_of(entry)
    head = object_head(fs, remote, label, multipart=integrity.parts_of(hash_type) is not None)
    changed = head and integrity.etag_disagrees(head["ETag"], entry)
    if changed:
        part.unlink(missing_ok=True)
        raise FetchError(f"{label}: {remote} changed since it was registered ({changed}); nothing downloaded")
    if not integrity.is_md5(hash_type):
        return None
    part_size = head.get("ContentLength") if head and head.get("PartsCount") else None
    return integrity.Digest(hash_type, int(entry["size"]), part_size)


def object_head(fs, remote: str, label: str, multipart: bool) -> dict | None:
    """The object's HEAD (of part 1 when `multipart`); None when it cannot be had now (the download retries
    then)."""
    bucket, key, _ = fs.split_path(remote)
    try:
        return fs.call_s3("head_object", Bucket=bucket, Key=key, **({"PartNumber": 1} if multipart else {}))
    except PermissionError as error:
        raise refused(label, remote, error, fs) from None
    except FileNotFoundError:
        raise FetchError(
            f"{label}: {remote} is not in its bucket (removed since it was registered)"
        ) from None
    except Exception as error:  # s3fs, botocore and aiohttp raise many kinds
        log.warning("%s: no HEAD of %s (%s); its ETag is not checked", label, remote, reason(error))
        return None


def download(fs, remote: str, part: Path, size: int, label: str, patience: Patience, digest=None) -> None:
    """Copy `remote` into `part`, resuming from what `part` already holds, retrying while `patience` lasts;
    `digest` (an `integrity.Digest`) is fed every byte `part` holds."""
    started = last_report = time.monotonic()
    while True:
        done = part.stat().st_size if part.exists() else 0
        if digest is not None:
            digest.sync(part)
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
                    if digest is not None:
                        digest.update(chunk)
                    done += len(chunk)
                    patience.restart()
                    if time.monotonic() - last_report >= PROGRESS_EVERY:
                        last_report = time.monotonic()
                        rate = done / max(last_report - started, 1e-9) / 1e6
                        log.info("%s: %.1f of %.1f MB (%.1f MB/s)", label, done / 1e6, size / 1e6, rate)
                    if done >= size:
                        break
            if done < size:
                raise OSError(f"{remote}: the server ended the file at {done} of {size} bytes")
        except Exception as error:  # s3fs, botocore and aiohttp raise many kinds: all others are retried
            if refusal(error):  # wrong or missing credentials, a private bucket: no retry mends that
                raise refused(label, remote, error, fs) from None
            if out_of_space(error):
                part.unlink(missing_ok=True)
                raise FetchError(
                    f"{label}: no space left on the disk of {part.parent}; set cache_dir to a larger disk"
                ) from None
            patience.wait_after(error, f"download of {remote}", label)


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


def refused(label: str, remote: str, error: Exception, fs) -> FetchError:
    """Access refused (a private bucket, wrong or missing credentials): one line naming the artifact, the
    object and what to check."""
    return FetchError(f"{label}: {remote} refused access ({refusal(error)}); {refused_hint(fs.anon)}")


def reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
