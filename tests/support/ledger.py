"""Read the usage ledger straight from its database, as an operator would."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

Rows = list[dict[str, object]]


def read_ledger(url: str) -> Rows:
    """Every usage record, in insertion order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM usage_events ORDER BY id")).mappings().all()
    finally:
        engine.dispose()
    return [dict(r) for r in rows]


def wait_for_rows(read: Callable[[], Rows], count: int, timeout: float, interval: float) -> Rows:
    """The ledger once it holds at least `count` rows (the writer batches), or as it
    is when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    rows = read()
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(interval)
        rows = read()
    return rows
