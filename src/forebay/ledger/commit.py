"""How a batch of usage rows reaches the database, whatever goes wrong.

One transaction per batch: the events and the hourly and daily rollups they
add to (see `rollups.py`). Errors come in two kinds:

* transient (connection lost, database restarting, a lock timeout): the batch
  is retried whole, with backoff, for up to `retry_for_s`; only then is it
  given up (its events stay in the spool, so the next start replays them);
* permanent (a value or a constraint the database refuses; a bug): retrying
  cannot help, so the batch is split in halves until each failing row is
  alone. The other rows are written; each bad row is counted, logged without
  its values, and appended to a dead-letter file an operator can recover it
  from. Nothing retries a permanent error.

A request id already in the ledger is skipped, never written twice (the table
has a unique index on it): the fast path (COPY on PostgreSQL) stops at the
index, and the batch is then inserted with ON CONFLICT DO NOTHING, adding to
the rollups only the rows really inserted. That also covers a commit whose
acknowledgement was lost, and a spool replayed twice.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from forebay.db.schema import usage_events
from forebay.ledger.records import EVENT_COLUMNS, dead_letter_line
from forebay.ledger.rollups import ROLLUPS, aggregate, upsert

log = logging.getLogger("forebay.ledger")

Row = dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What became of one batch."""

    inserted: int = 0
    duplicates: int = 0  # already in the ledger
    rejected: int = 0  # refused for good, kept in the dead-letter file
    given_up: list[int] = field(default_factory=list)  # indexes: transient errors outlasted
    failed_attempts: int = 0


class DeadLetter:
    """Rows the database refused for good, one JSON line each (the spool's
    format, with the error), so that an operator can recover them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, row: Row, error: str) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, dead_letter_line(row, error, time.time()))
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("could not write to the ledger dead-letter file %s: %s", self.path, exc)
            return False
        return True


class _Permanent(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Committer:
    def __init__(
        self,
        engine: Engine,
        *,
        retry_for_s: float = 60.0,
        dead_letter: DeadLetter | None = None,
        on_rejected: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._dbapi = engine.dialect.loaded_dbapi
        self.retry_for_s = retry_for_s
        self._dead_letter = dead_letter
        self._on_rejected = on_rejected

    def write(
        self, rows: list[Row], *, known_new: bool = True, give_up_at: float = 1e300
    ) -> Outcome:
        """Write fitted rows. `known_new` tries the fast path first (rows that
        have never been written); a replay passes False."""
        out = Outcome()
        give_up_at = min(give_up_at, time.monotonic() + self.retry_for_s)
        todo = [(0, len(rows), known_new)]
        while todo:
            lo, hi, fast = todo.pop()
            part = rows[lo:hi]
            try:
                inserted = self._retrying(part, fast, give_up_at, out)
            except _Permanent as exc:
                if fast:
                    todo.append((lo, hi, False))  # maybe only rows already written
                elif hi - lo > 1:
                    if hi - lo == len(rows):
                        log.warning(
                            "a ledger batch of %d events was refused (%s); "
                            "isolating the rows that cause it",
                            len(rows),
                            _kind(exc.cause),
                        )
                    mid = (lo + hi) // 2
                    todo += [(mid, hi, False), (lo, mid, False)]
                else:
                    self._reject(part[0], exc.cause)
                    out.rejected += 1
                continue
            if inserted is None:
                out.given_up.extend(range(lo, hi))
            else:
                out.inserted += inserted
                out.duplicates += len(part) - inserted
        return out

    def _retrying(self, rows: list[Row], fast: bool, give_up_at: float, out: Outcome) -> int | None:
        """Rows inserted, or None once transient errors outlast `give_up_at`."""
        delay = 0.1
        for attempt in itertools.count(1):
            try:
                return self._commit(rows, fast)
            except Exception as exc:
                out.failed_attempts += 1
                if not self.is_transient(exc):
                    raise _Permanent(exc) from exc
                remaining = give_up_at - time.monotonic()
                if remaining <= 0:
                    log.error(
                        "gave up writing %d usage events after %d attempts: %s",
                        len(rows),
                        attempt,
                        describe(exc),
                    )
                    return None
                log.warning(
                    "ledger write of %d events failed (attempt %d), retrying in %.1f s: %s",
                    len(rows),
                    attempt,
                    min(delay, remaining),
                    describe(exc),
                )
                time.sleep(min(delay, remaining))
                delay = min(5.0, delay * 2)
        raise AssertionError("unreachable")

    def _commit(self, rows: list[Row], fast: bool) -> int:
        with self._engine.begin() as conn:
            if fast:
                insert_events(conn, rows)
                new = rows
            else:
                new = insert_new(conn, rows)
            for rollup in ROLLUPS:
                upsert(conn, rollup, aggregate(rollup, new))
        return len(new)

    def is_transient(self, exc: BaseException) -> bool:
        """Worth retrying: the connection or the server, not the data."""
        if isinstance(exc, DBAPIError):
            if exc.connection_invalidated:
                return True
            exc = exc.orig if exc.orig is not None else exc
        if isinstance(exc, DisconnectionError | PoolTimeout | OSError):
            return True
        transient = (self._dbapi.OperationalError, self._dbapi.InterfaceError)
        return isinstance(exc, transient)

    def _reject(self, row: Row, exc: BaseException) -> None:
        self._on_rejected()
        kept = self._dead_letter is not None and self._dead_letter.add(row, describe(exc))
        where = f"kept in {self._dead_letter.path}" if kept and self._dead_letter else "lost"
        # The kind of error only: the message may quote the row's values.
        log.error("a usage event was refused by the database (%s); %s", _kind(exc), where)


def insert_events(conn: Connection, rows: list[Row]) -> None:
    """One batch of new events: COPY on PostgreSQL (about twice the rows/s of a
    SQLAlchemy executemany in bench/ledger_scale.py); on SQLite the driver's own
    executemany of one prepared INSERT (about 10 µs a row less than SQLAlchemy's,
    time the writer thread would otherwise hold the GIL against the event loop)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        conn.exec_driver_sql(_SQLITE_INSERT, [tuple(row[c] for c in EVENT_COLUMNS) for row in rows])
        return
    if dialect != "postgresql":
        conn.execute(insert(usage_events), rows)
        return
    driver: Any = conn.connection.driver_connection  # psycopg, in this transaction
    copy_sql = f"COPY usage_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
    with driver.cursor() as cur, cur.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row([row[c] for c in EVENT_COLUMNS])


# Built once from the table's own column names, never from a value.
_SQLITE_INSERT = (
    f"INSERT INTO usage_events ({', '.join(EVENT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)


def insert_new(conn: Connection, rows: list[Row]) -> list[Row]:
    """Insert the rows whose request id is not in the ledger yet; those rows."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(usage_events)
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(usage_events.c.request_id)
    )
    fresh = set(conn.execute(stmt, rows).scalars())
    new = []
    for row in rows:
        if row["request_id"] in fresh:
            fresh.discard(row["request_id"])  # a request id twice in one batch: the first
            new.append(row)
    return new


def describe(exc: BaseException) -> str:
    """The error without the statement's parameters (or a connection URL): the
    driver's own first line of message, at most 300 characters."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines() or [""]
    return f"{type(cause).__name__}: {lines[0][:300]}"


def _kind(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    state = getattr(cause, "sqlstate", None)
    return f"{type(cause).__name__}, SQLSTATE {state}" if state else type(cause).__name__
