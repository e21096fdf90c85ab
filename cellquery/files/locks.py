"""Who holds a file lock: the kernel's table of them (Linux's /proc/locks)."""

from __future__ import annotations

from pathlib import Path


def lock_holders(path: Path) -> list[int]:
    """The pids holding a lock (flock or POSIX) on `path`, none waiting for one; [] where the table is
    unreadable."""
    inode = path.stat().st_ino
    try:
        entries = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    fields = [entry.split() for entry in entries if "->" not in entry]  # not the processes waiting
    return sorted({int(f[4]) for f in fields if len(f) > 5 and f[5].rsplit(":", 1)[-1] == str(inode)})
