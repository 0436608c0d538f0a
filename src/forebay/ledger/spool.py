"""A local append-only spool of usage, so that a process that is killed
(SIGKILL, the OOM killer) loses no record of what it served or was serving.

Each process appends to its own segments in `<data dir>/spool/`: a `begun`
record when a request goes to dispatch, `routed` when a deployment is chosen
for it, and `done` (the whole usage event) before its response completes
(see `records.py`). A segment is a file of fixed size, its disk blocks
allocated up front, mapped shared into memory: appending a record is a copy
into the mapping, no system call, and the bytes are in the kernel's page
cache at once, so they outlive the process however it dies. (Not a power
loss: an fsync per request would cost milliseconds.) A system call per record
cost far more than its few microseconds: each `os.write` lets go of the GIL,
and the ledger writer's thread took it, so the event loop waited and the
kernel switched threads three times a request (bench/overhead.py measured
about 170 µs a request at c=1 with writes, against nothing without a spool).
A segment's blocks are allocated before it is mapped, so a full disk is an
error at rotation (counted, the record is not spooled), never a SIGBUS; the
unused end of a segment is zeros, which replay skips, and a segment closed or
rotated out is cut to what it holds.

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
import logging
import mmap
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from forebay.ledger.events import UsageEvent
from forebay.ledger.owner_lock import hold, lock_path
from forebay.ledger.records import BEGUN, ROUTED, done_line, header_line, line

log = logging.getLogger("forebay.ledger")

NO_SEGMENT = -1  # a `done` record that is not in the spool (off, or the write failed)
SEGMENT_SUFFIX = ".spool"


def segment_name(owner: str, seq: int) -> str:
    return f"{owner}.{seq:06d}{SEGMENT_SUFFIX}"


def owner_of(name: str) -> str:
    return name.split(".", 1)[0]


class _Segment:
    """One segment file, mapped: `append` copies into the mapping."""

    __slots__ = ("map", "path", "pos", "size")

    def __init__(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)  # ENOSPC here, not SIGBUS on a later copy
            self.map = mmap.mmap(fd, size)  # MAP_SHARED: the page cache's own pages
        except OSError:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        os.close(fd)  # the mapping keeps the file
        self.path = path
        self.size = size
        self.pos = 0

    def room(self) -> int:
        return self.size - self.pos

    def append(self, data: bytes) -> None:
        end = self.pos + len(data)
        self.map[self.pos : end] = data
        self.pos = end

    def close(self) -> None:
        """Unmap, and cut the file to what it holds (if it still exists)."""
        self.map.close()
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.path, self.pos)


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
        self._segment: _Segment | None = None
        self._seq = 0
        self._base = 0  # bytes of the current segment's header and the records carried into it
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
        self._lock_fd = hold(self.directory, self.owner)
        self._segment = self._open_segment(self._seq, b"")
        self._base = self._segment.pos
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
        if self._segment is None:
            return
        self._segment.close()
        self._segment = None
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
                lock_path(self.directory, self.owner).unlink()
        os.close(self._lock_fd)  # releases the lock: a dead owner from now on
        self._lock_fd = -1

    def _append(self, record: bytes) -> int:
        segment = self._segment
        if segment is None:
            return NO_SEGMENT
        try:
            # Counting only what was appended since the segment began, not its
            # header and carried records: with many requests in flight, a carry
            # larger than a segment must not rotate at every record.
            if (
                segment.pos - self._base + len(record) > self._segment_bytes
                or len(record) > segment.room()
            ):
                segment = self._rotate(len(record))
            segment.append(record)
        except (OSError, ValueError) as exc:  # ValueError: a closed mapping
            self._failed(exc)
            return NO_SEGMENT
        return self._seq

    def _rotate(self, need: int) -> _Segment:
        old, old_seq = self._segment, self._seq
        assert old is not None
        carry = b"".join(self._in_flight.values())
        segment = self._open_segment(old_seq + 1, carry, need)  # on failure: keep the old one
        self._segment, self._seq = segment, old_seq + 1
        self._base = segment.pos
        old.close()
        with self._mutex:
            if self._pending.get(old_seq, 0) > 0:
                self._closed.add(old_seq)
                return segment
            self._pending.pop(old_seq, None)
        self._unlink(old_seq)
        return segment

    def _open_segment(self, seq: int, carry: bytes, need: int = 0) -> _Segment:
        """A new segment holding its header and `carry`, with room for `need` bytes
        more and at least `segment_bytes`."""
        header = header_line()
        size = len(header) + len(carry) + max(self._segment_bytes, need)
        segment = _Segment(self.path(seq), size)
        segment.append(header)
        segment.append(carry)
        return segment

    def _failed(self, exc: Exception) -> None:
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
