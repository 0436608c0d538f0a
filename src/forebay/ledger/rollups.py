"""Hourly and daily rollups of the usage ledger, kept current by the writer.

Each batch of events is summed in Python per (bucket, tenant, key, model,
deployment, protocol) and upserted (`INSERT ... ON CONFLICT DO UPDATE`, adding to the
sums) in the same transaction as the events themselves, so the rollups never
disagree with the raw rows. Usage queries read whole hours and days from here
and only the ragged start of a window from the events (see `query.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Column, Connection, Table, bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from forebay.db.schema import usage_daily, usage_hourly

KEYS = ("tenant_id", "key_id", "alias", "deployment", "protocol")
TOKEN_PARTS = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
INT_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", *TOKEN_PARTS)
FLOAT_SUMS = ("cost_usd", "energy_wh", "latency_ms_sum")


@dataclass(frozen=True, slots=True)
class Rollup:
    table: Table
    bucket_name: str  # whole hours or days since the Unix epoch, UTC
    width_s: int

    @property
    def bucket(self) -> Column[Any]:
        return self.table.c[self.bucket_name]

    def bucket_of(self, ts: float) -> int:
        # Exact floor: an event at ts falls in bucket b iff b*w <= ts < (b+1)*w,
        # the same comparison the query uses against raw `ts`.
        return int(ts // self.width_s)

    def first_whole_bucket(self, since: float) -> int:
        """The first bucket that starts at or after `since`."""
        b = self.bucket_of(since)
        return b if b * self.width_s >= since else b + 1


HOURLY = Rollup(usage_hourly, "hour", 3600)
DAILY = Rollup(usage_daily, "day", 86400)
ROLLUPS = (HOURLY, DAILY)


def aggregate(rollup: Rollup, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Sum event rows (as written to `usage_events`) into rollup rows, sorted by
    key so concurrent writers lock rollup rows in the same order."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for e in events:
        key = (
            rollup.bucket_of(e["ts"]),
            e["tenant_id"] or "",
            e["key_id"] or "",
            e["alias"] or "",
            e["deployment"] or "",
            e["protocol"],
        )
        acc = sums.get(key)
        if acc is None:
            acc = sums[key] = [0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0]
        acc[0] += 1
        acc[1] += 1 if e["status"] >= 400 else 0
        acc[2] += e["prompt_tokens"]
        acc[3] += e["completion_tokens"]
        acc[4] += e["cache_read_tokens"]
        acc[5] += e["cache_write_tokens"]
        acc[6] += e["reasoning_tokens"]
        acc[7] += e["cost_usd"]
        acc[8] += e["energy_wh"]
        acc[9] += e["latency_ms"]
    names = (rollup.bucket_name, *KEYS, *INT_SUMS, *FLOAT_SUMS)
    return [dict(zip(names, (*key, *acc), strict=True)) for key, acc in sorted(sums.items())]


def upsert(conn: Connection, rollup: Rollup, rows: list[dict[str, Any]]) -> None:
    """Add rows to the rollup: insert new buckets, add to existing ones.

    PostgreSQL gets one statement per batch (the rows as arrays, `unnest`ed);
    SQLite, in-process, an executemany of the same upsert.
    """
    if not rows:
        return
    t = rollup.table
    names = (rollup.bucket_name, *KEYS, *INT_SUMS, *FLOAT_SUMS)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        columns = [func.unnest(bindparam(n, type_=ARRAY(t.c[n].type))) for n in names]
        stmt: Any = postgresql.insert(t).from_select(names, select(*columns))
        params: Any = {n: [r[n] for r in rows] for n in names}
    elif dialect == "sqlite":
        stmt, params = sqlite.insert(t), rows
    else:
        raise RuntimeError(f"usage rollups support SQLite and PostgreSQL, not {dialect}")
    stmt = stmt.on_conflict_do_update(
        index_elements=[rollup.bucket_name, *KEYS],
        set_={c: t.c[c] + stmt.excluded[c] for c in (*INT_SUMS, *FLOAT_SUMS)},
    )
    conn.execute(stmt, params)


def rebuild(conn: Connection) -> None:
    """Recompute every rollup from the raw events (for bulk loads, or repairs),
    in SQL so it scales to tables that do not fit in memory."""
    for rollup in ROLLUPS:
        conn.execute(delete(rollup.table))
        conn.execute(text(rebuild_sql(rollup, conn.dialect.name)))


def rebuild_sql(rollup: Rollup, dialect: str) -> str:
    w = rollup.width_s
    if dialect == "postgresql":
        approx = f"CAST(floor(ts / {w}) AS BIGINT)"
    else:
        approx = f"CAST(ts / {w} AS INTEGER)"  # ts >= 0: truncation is floor
    cols = ", ".join((rollup.bucket_name, *KEYS, *INT_SUMS, *FLOAT_SUMS))
    # `b - 1` where the division rounded up to the next integer: exact floor.
    return f"""
        INSERT INTO {rollup.table.name} ({cols})
        SELECT b - CASE WHEN ts < b * {w} THEN 1 ELSE 0 END,
            COALESCE(tenant_id, ''), COALESCE(key_id, ''), COALESCE(alias, ''),
            COALESCE(deployment, ''), protocol, COUNT(*),
            SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens),
            SUM(completion_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),
            SUM(reasoning_tokens), SUM(cost_usd), SUM(energy_wh), SUM(latency_ms)
        FROM (SELECT {approx} AS b, * FROM usage_events) AS e
        GROUP BY 1, 2, 3, 4, 5, 6
    """  # noqa: S608 (no user input: table and column names are constants)
