"""Bounded queue plus one background writer thread that inserts in batches.

The request path only does `put_nowait` (microseconds, no I/O). A full queue
is counted and logged, never silent. `close()` drains everything that was
queued, so a graceful shutdown loses nothing.

Each batch is one transaction: the events (COPY on PostgreSQL, an executemany
on SQLite) and the hourly and daily rollups they add to (see `rollups.py`). A
failed transaction is retried whole, with backoff, for up to `retry_for_s` (a
database restart loses nothing); only then are its events given up, counted as
dropped and logged.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, insert
from sqlalchemy.exc import DBAPIError

from forebay.db.schema import usage_events
from forebay.ledger.events import UsageEvent
from forebay.ledger.rollups import ROLLUPS, aggregate, upsert

log = logging.getLogger("forebay.ledger")

_STOP = object()


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
        retry_for_s: float = 60.0,
    ) -> None:
        self._engine = engine
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._on_dropped = on_dropped
        self._on_written = on_written
        self._retry_for_s = retry_for_s
        self._give_up_at = float("inf")  # set by close(): retry no longer than it waits
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self.dropped = 0
        self.written = 0
        self.failed_batches = 0  # failed write attempts, each retried
        self._last_drop_log = 0.0

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: UsageEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            self._on_dropped()
            now = time.monotonic()
            if now - self._last_drop_log > 5:
                self._last_drop_log = now
                log.error(
                    "ledger queue full (%d events): %d usage events dropped so far; "
                    "the database is not keeping up",
                    self._queue.maxsize,
                    self.dropped,
                )

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything queued, then stop the thread."""
        if not self._thread.is_alive():
            return
        self._give_up_at = time.monotonic() + max(0.0, timeout - 1.0)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "ledger writer did not finish within %.0f s; %d events pending",
                timeout,
                self._queue.qsize(),
            )

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[UsageEvent] = []
            try:
                item = self._queue.get(timeout=self._interval)
            except queue.Empty:
                continue
            deadline = time.monotonic() + self._interval
            while True:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, UsageEvent)
                batch.append(item)
                if len(batch) >= self._batch_size:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if stopping:
                # Anything still queued behind the stop marker was submitted
                # before shutdown finished; keep it.
                while True:
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(rest, UsageEvent):
                        batch.append(rest)
            if batch:
                self._write(batch)

    def _write(self, batch: list[UsageEvent]) -> None:
        rows = [e.row() for e in batch]
        sums = [(rollup, aggregate(rollup, rows)) for rollup in ROLLUPS]
        give_up_at = time.monotonic() + self._retry_for_s
        delay = 0.1
        for attempt in itertools.count(1):
            try:
                with self._engine.begin() as conn:
                    insert_events(conn, rows)
                    for rollup, rollup_rows in sums:
                        upsert(conn, rollup, rollup_rows)
            except Exception as exc:
                self.failed_batches += 1
                remaining = min(give_up_at, self._give_up_at) - time.monotonic()
                if remaining <= 0:
                    self.dropped += len(rows)
                    for _ in rows:
                        self._on_dropped()
                    log.error(
                        "gave up writing %d usage events after %d attempts: %s",
                        len(rows),
                        attempt,
                        _describe(exc),
                    )
                    return
                log.warning(
                    "ledger write of %d events failed (attempt %d), retrying in %.1f s: %s",
                    len(rows),
                    attempt,
                    min(delay, remaining),
                    _describe(exc),
                )
                time.sleep(min(delay, remaining))
                delay = min(5.0, delay * 2)
                continue
            self.written += len(rows)
            self._on_written(len(rows))
            return


EVENT_COLUMNS = tuple(c.name for c in usage_events.c if c.name != "id")


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One batch of events: COPY on PostgreSQL (about twice the rows/s of a
    SQLAlchemy executemany in bench/ledger_scale.py), executemany on SQLite."""
    if conn.dialect.name != "postgresql":
        conn.execute(insert(usage_events), rows)
        return
    driver: Any = conn.connection.driver_connection  # psycopg, in this transaction
    copy_sql = f"COPY usage_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
    with driver.cursor() as cur, cur.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row([row[c] for c in EVENT_COLUMNS])


def _describe(exc: BaseException) -> str:
    """The error without the statement's parameters (or a connection URL): the
    driver's own first line of message, at most 300 characters."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines() or [""]
    return f"{type(cause).__name__}: {lines[0][:300]}"
