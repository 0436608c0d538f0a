"""A local append-only spool of usage, so that a process that is killed
(SIGKILL, the OOM killer) loses no record of what it served or was serving.

Each process appends to its own segments in `<data dir>/spool/`: a `begun`
record when a request goes to dispatch, `routed` when a deployment is chosen
for it, and `done` (the whole usage event) before its response completes
(see `records.py`). Every record is one `os.write` on a descriptor opened
with O_APPEND: once `write` returns, the bytes belong to the kernel's page
cache and outlive the process. (Not a power loss: an fsync per request would
cost milliseconds.)

The ledger writer reports which `done` records it has committed. A segment
is deleted once it is no longer the one being appended to and every `done`
record in it is committed; when a segment is rotated, the `begun` records of
the requests still in flight are written again into the new one, so an old
segment is never kept for them. A clean shutdown leaves no file behind,
unless something was not committed (it is then replayed at the next start).

A process holds an exclusive `flock` on its `<owner>.lock` for as long as it
lives; the kernel drops the lock when the process dies, however it dies. At
start, `replay.py` takes over the segments of every owner whose lock it can
take: several `forebay serve --workers N` processes share the directory and
never replay each other's live spools.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from forebay.ledger.events import UsageEvent
from forebay.ledger.records import BEGUN, ROUTED, done_line, header_line, line

log = logging.getLogger("forebay.ledger")

NO_SEGMENT = -1  # a `done` record that is not in the spool (off, or the write failed)
SEGMENT_SUFFIX = ".spool"
LOCK_SUFFIX = ".lock"


def segment_name(owner: str, seq: int) -> str:
    return f"{owner}.{seq:06d}{SEGMENT_SUFFIX}"


def owner_of(name: str) -> str:
    return name.split(".", 1)[0]


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 1 << 20,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.directory = directory
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._segment_bytes = segment_bytes
        self._on_error = on_error
        self._lock_fd = -1
        self._fd = -1
        self._seq = 0
        self._size = 0  # bytes in the current segment
        self._base = 0  # of which its header and the records carried into it
        self._in_flight: dict[str, bytes] = {}  # request id -> its begun/routed records
        # Shared with the writer thread, under the mutex:
        self._mutex = threading.Lock()
        self._pending: dict[int, int] = {}  # segment -> done records not committed yet
        self._closed: set[int] = set()  # rotated out, not deleted yet
        self.errors = 0
        self._last_error_log = 0.0

    # -- owner side (the event loop) ----------------------------------------
    def open(self) -> Spool:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self.directory / f"{self.owner}{LOCK_SUFFIX}"
        self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = self._open_segment(self._seq)
        self._size = self._base = len(header_line())
        return self

    def path(self, seq: int) -> Path:
        return self.directory / segment_name(self.owner, seq)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def begin(self, request_id: str, fields: dict[str, Any]) -> None:
        record = line(BEGUN, fields)
        self._in_flight[request_id] = record
        self._append(record)

    def routed(self, request_id: str, fields: dict[str, Any]) -> None:
        record = line(ROUTED, fields)
        before = self._in_flight.get(request_id)
        if before is not None:  # a retry elsewhere adds one more; replay reads the last
            self._in_flight[request_id] = before + record
        self._append(record)

    def done(self, event: UsageEvent) -> int:
        """Append the event; the segment it is in, for `settle` once committed."""
        self._in_flight.pop(event.request_id, None)
        seq = self._append(done_line(event))
        if seq != NO_SEGMENT:
            with self._mutex:
                self._pending[seq] = self._pending.get(seq, 0) + 1
        return seq

    def close(self) -> None:
        """At shutdown, after the writer has drained: delete what is committed,
        keep the rest (and requests never finished) for the next start."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        with self._mutex:
            segments = {*self._closed, self._seq}
            keep = {s for s in segments if self._pending.get(s, 0) > 0}
            if self._in_flight:
                keep.add(self._seq)
            self._closed = set()
        for seq in segments - keep:
            self._unlink(seq)
        if keep:
            log.warning(
                "ledger spool: %d segment(s) with usage not yet in the database kept in %s; "
                "the next start writes them",
                len(keep),
                self.directory,
            )
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{self.owner}{LOCK_SUFFIX}").unlink()
        os.close(self._lock_fd)  # releases the lock: a dead owner from now on
        self._lock_fd = -1

    def _append(self, record: bytes) -> int:
        if self._fd < 0:
            return NO_SEGMENT
        try:
            # Counting only what was appended since the segment began, not its
            # header and carried records: with many requests in flight, a carry
            # larger than a segment must not rotate at every record.
            if self._size - self._base + len(record) > self._segment_bytes:
                self._rotate()
            written = os.write(self._fd, record)
            self._size += written
            if written < len(record):  # disk full mid-record: end the torn line
                os.write(self._fd, b"\n")
                raise OSError("short write to the ledger spool")
        except OSError as exc:
            self._failed(exc)
            return NO_SEGMENT
        return self._seq

    def _rotate(self) -> None:
        old_fd, old = self._fd, self._seq
        fd = self._open_segment(old + 1)
        carry = b"".join(self._in_flight.values())
        try:
            view = memoryview(carry)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            os.close(fd)  # keep appending to the old segment
            self._unlink(old + 1)
            raise
        self._fd, self._seq = fd, old + 1
        self._size = self._base = len(carry) + len(header_line())
        os.close(old_fd)
        with self._mutex:
            if self._pending.get(old, 0) > 0:
                self._closed.add(old)
                return
            self._pending.pop(old, None)
        self._unlink(old)

    def _open_segment(self, seq: int) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path(seq), flags, 0o600)
        try:
            os.write(fd, header_line())
        except OSError:
            os.close(fd)
            raise
        return fd

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        self._on_error()
        now = time.monotonic()
        if now - self._last_error_log > 5:
            self._last_error_log = now
            log.error(
                "ledger spool write failed (%s): %d records not spooled so far; they are "
                "still queued for the database, but a crash now would lose them",
                exc,
                self.errors,
            )

    # -- writer side (the ledger writer's thread) ----------------------------
    def settle(self, segments: Iterable[int]) -> None:
        """These `done` records are committed: delete segments left with none."""
        counts = Counter(s for s in segments if s != NO_SEGMENT)
        if not counts and not self._closed:
            return
        with self._mutex:
            for seq, n in counts.items():
                self._pending[seq] = self._pending.get(seq, 0) - n
            ready = [s for s in self._closed if self._pending.get(s, 0) <= 0]
            for seq in ready:
                self._closed.discard(seq)
                self._pending.pop(seq, None)
        for seq in ready:
            self._unlink(seq)

    def _unlink(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(seq).unlink()
