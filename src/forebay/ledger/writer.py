"""Bounded queue plus one background writer thread that inserts in batches.

The request path only copies the event into this process's spool (see
`spool.py`) and appends it to a deque (microseconds, no database, no lock,
no system call). The writer is woken when a batch is full, else it wakes by
itself every `flush_interval_s`: never once per event, which cost a thread
switch a request. A full queue is counted and logged, never silent, and the
event is still in the spool for the next start. `close()` drains everything that
was queued, so a graceful shutdown loses nothing; a killed process loses
nothing either, as its spool is replayed when the next process starts.

How a batch reaches the database (retries, a bad row isolated from the good
ones, request ids written once) is `commit.py`; the writer then tells the
spool which of its records are committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from forebay.ledger.commit import Committer, DeadLetter
from forebay.ledger.events import UsageEvent
from forebay.ledger.records import fit_event_row
from forebay.ledger.spool import NO_SEGMENT, Spool

log = logging.getLogger("forebay.ledger")


class LedgerWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        queue_size: int,
        batch_size: int,
        flush_interval_s: float,
        on_dropped: Callable[[], None] = lambda: None,
        on_written: Callable[[int], None] = lambda n: None,
        on_rejected: Callable[[], None] = lambda: None,
        retry_for_s: float = 60.0,
        spool: Spool | None = None,
        dead_letter: Path | None = None,
    ) -> None:
        self.committer = Committer(
            engine,
            retry_for_s=retry_for_s,
            dead_letter=DeadLetter(dead_letter) if dead_letter is not None else None,
            on_rejected=on_rejected,
        )
        self.spool = spool
        self._queue: deque[tuple[UsageEvent, int]] = deque()
        self._queue_size = queue_size
        self._wake = threading.Event()  # a batch is full, or stop
        self._stopping = False
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._on_dropped = on_dropped
        self._on_written = on_written
        self._give_up_at = float("inf")  # set by close(): retry no longer than it waits
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self.dropped = 0
        self.written = 0
        self.failed_batches = 0  # failed write attempts (retried, or split to isolate a row)
        self.duplicates = 0  # events whose request id was already in the ledger
        self.rejected = 0  # events the database refused for good (see commit.py)
        self._last_drop_log = 0.0

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: UsageEvent) -> None:
        segment = self.spool.done(event) if self.spool is not None else NO_SEGMENT
        queued = self._queue
        if len(queued) >= self._queue_size:
            self._full()
            return
        queued.append((event, segment))  # deque.append is atomic: no lock needed
        if len(queued) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _full(self) -> None:
        self.dropped += 1
        self._on_dropped()
        now = time.monotonic()
        if now - self._last_drop_log > 5:
            self._last_drop_log = now
            log.error(
                "ledger queue full (%d events): %d usage events dropped so far "
                "(kept in the spool, if on, for the next start); "
                "the database is not keeping up",
                self._queue_size,
                self.dropped,
            )

    @property
    def depth(self) -> int:
        return len(self._queue)

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything queued, then stop the thread and close the spool."""
        if self._thread.is_alive():
            self._drain(timeout)
        if self.spool is not None:
            self.spool.close()  # keeps whatever is not committed, for the next start

    def _drain(self, timeout: float) -> None:
        self._give_up_at = time.monotonic() + max(0.0, timeout - 1.0)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "ledger writer did not finish within %.0f s; %d events pending",
                timeout,
                len(self._queue),
            )

    def _run(self) -> None:
        queued = self._queue
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stopping  # read before draining: what came before is kept
            while queued:
                batch: list[tuple[UsageEvent, int]] = []
                while queued and len(batch) < self._batch_size:
                    batch.append(queued.popleft())
                self._write(batch)
            if stopping:
                return

    def _write(self, batch: list[tuple[UsageEvent, int]]) -> None:
        rows = [fit_event_row(event.row()) for event, _ in batch]
        out = self.committer.write(rows, give_up_at=self._give_up_at)
        self.failed_batches += out.failed_attempts
        self.duplicates += out.duplicates
        self.rejected += out.rejected
        if out.inserted:
            self.written += out.inserted
            self._on_written(out.inserted)
        if out.given_up:
            # Counted as dropped; their `done` records stay in the spool (not
            # settled below), so the next start still writes them.
            self.dropped += len(out.given_up)
            for _ in out.given_up:
                self._on_dropped()
        if self.spool is not None:
            lost = set(out.given_up)
            self.spool.settle(seg for i, (_, seg) in enumerate(batch) if i not in lost)
