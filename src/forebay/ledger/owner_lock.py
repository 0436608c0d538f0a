"""Files a process leaves on local disk for the next start to recover (the
usage spool, the background-responses journal) belong to an owner, and the
owner holds an exclusive `flock` on `<owner>.lock` for as long as it lives: the
kernel drops it however the process dies, so a lock that can be taken is a
dead owner's, whose files are the taker's to recover."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_SUFFIX = ".lock"


def lock_path(directory: Path, owner: str) -> Path:
    return directory / f"{owner}{LOCK_SUFFIX}"


def hold(directory: Path, owner: str) -> int:
    """Create and lock the owner's lock file; its descriptor (closing it
    releases the lock)."""
    fd = os.open(lock_path(directory, owner), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@contextlib.contextmanager
def claimed(lock: Path) -> Iterator[bool]:
    """True while this process holds a dead owner's lock (its files are ours to
    recover, and to remove, lock file last, while holding it)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:  # another process recovered it just now
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # alive, or being recovered by another process
            yield False
            return
        # Recovered and removed by another process between our open and flock?
        yield os.fstat(fd).st_nlink > 0
    finally:
        os.close(fd)
