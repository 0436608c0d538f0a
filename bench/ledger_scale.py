"""The usage ledger at scale: usage summaries over 10 million events in
PostgreSQL, answered from the hourly/daily rollups versus from the raw events,
and the ledger writer's insert throughput on SQLite and PostgreSQL.

    .venv/bin/python -m bench.ledger_scale [--rows 10000000] [--repeat 3]

Starts a throwaway PostgreSQL (durable settings: fsync and synchronous_commit
on) in a temporary directory, generates the events server-side with
generate_series (30 days ending now; 50 tenants, 200 keys, 8 models with two
deployments each), builds the rollups with the same SQL the migration uses,
then times `summarize()` and `summarize_raw()` for the last 24 hours, 7 days
and 30 days, grouped by tenant and by model (median of --repeat runs after
one warm-up). Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy import Engine, func, select

from forebay.db.engine import make_engine
from forebay.db.migrate import upgrade
from forebay.db.schema import usage_daily, usage_events, usage_hourly
from forebay.ledger.commit import insert_events
from forebay.ledger.events import UsageEvent
from forebay.ledger.query import GroupBy, UsageRow, summarize, summarize_raw
from forebay.ledger.rollups import rebuild
from forebay.ledger.writer import LedgerWriter
from tests.support.postgres import PostgresServer

DAY = 86400
DURABLE = ("shared_buffers=1GB", "work_mem=64MB", "maintenance_work_mem=512MB", "max_wal_size=8GB")
EVENT_INDEXES = {  # dropped for the bulk load, rebuilt after (as a restore would)
    "ix_usage_tenant_ts": "usage_events (tenant_id, ts)",
    "ix_usage_key_ts": "usage_events (key_id, ts)",
    "ix_usage_ts": "usage_events (ts)",
}

# One statement per chunk of rows [first, last] of `rows`, spread evenly over
# the 30 days before `now`. Key k belongs to tenant k % 50
# and uses two models; each request picks one of its model's two deployments.
GENERATE = """
INSERT INTO usage_events (ts, request_id, tenant_id, key_id, endpoint, alias, deployment,
    route_reason, stream, prompt_tokens, completion_tokens, tokens_estimated, cost_usd,
    energy_wh, status, error_type, ttft_ms, latency_ms, config_revision)
SELECT ts, 'req-' || i, 'tenant-' || mod(k, 50), 'key-' || k, 'chat', 'model-' || m,
    'model-' || m || '-' || d, 'least_loaded', r1 < 0.3, p, c, false,
    (p * (0.5 + m) + c * (1.5 + 2 * m)) / 1e6, (p * 0.3 + c * 1.5) / 3600.0,
    CASE WHEN r2 < 0.97 THEN 200 WHEN r2 < 0.99 THEN 429 ELSE 502 END,
    CASE WHEN r2 < 0.97 THEN NULL WHEN r2 < 0.99 THEN 'rate_limited' ELSE 'upstream' END,
    50 + r1 * 400, 200 + r2 * 4000, 'bench'
FROM (
    SELECT i,
        %(now)s::float8 - 30 * 86400 + (i - 1) * (30 * 86400.0 / %(rows)s) AS ts,
        k, CASE WHEN random() < 0.7 THEN mod(k, 8) ELSE mod(k * 3 + 1, 8) END AS m,
        (random() < 0.5)::int AS d,
        (10 + random() * 3000)::int AS p, (1 + random() * 800)::int AS c,
        random() AS r1, random() AS r2
    FROM (SELECT i, floor(random() * 200)::int AS k
          FROM generate_series(%(first)s::bigint, %(last)s) AS i) s
) g
"""


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: the plan cache, the buffer cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def generate(server: PostgresServer, url: str, rows: int, now: float) -> dict[str, float]:
    """Load `rows` events and build their rollups; seconds per phase."""
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    phases: dict[str, float] = {}
    dsn = server.dsn(url.rsplit("/", 1)[1])
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in EVENT_INDEXES:
            conn.execute(f"DROP INDEX {name}")  # type: ignore[arg-type]
        conn.execute("SELECT setseed(0.42)")
        t = time.perf_counter()
        chunk = 1_000_000
        for first in range(1, rows + 1, chunk):
            last = min(rows, first + chunk - 1)
            conn.execute(GENERATE, {"first": first, "last": last, "now": now, "rows": rows})
            print(f"  generated {last:,} rows ({time.perf_counter() - t:.0f} s)", flush=True)
        phases["insert rows (generate_series)"] = time.perf_counter() - t
        t = time.perf_counter()
        for name, target in EVENT_INDEXES.items():
            conn.execute(f"CREATE INDEX {name} ON {target}")  # type: ignore[arg-type]
        phases["create 3 indexes"] = time.perf_counter() - t
    engine = make_engine(url)
    t = time.perf_counter()
    with engine.begin() as conn:
        rebuild(conn)
    phases["build hourly + daily rollups"] = time.perf_counter() - t
    engine.dispose()
    with psycopg.connect(dsn, autocommit=True) as conn:
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        phases["vacuum analyze"] = time.perf_counter() - t
    return phases


def time_queries(engine: Engine, now: float, repeat: int) -> list[tuple[str, str, float, float]]:
    results = []
    for window, seconds in (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)):
        for by in ("tenant", "model"):
            group: GroupBy = by  # type: ignore[assignment]
            since = now - seconds
            fast = summarize(engine, since=since, by=group)
            slow = summarize_raw(engine, since=since, by=group)
            _check_equal(fast, slow)
            t_roll = _median_s(partial(summarize, engine, since=since, by=group), repeat)
            t_raw = _median_s(partial(summarize_raw, engine, since=since, by=group), repeat)
            print(f"  {window} by {by}: rollups {t_roll * 1000:.1f} ms, raw {t_raw * 1000:.0f} ms")
            results.append((window, by, t_roll, t_raw))
    return results


def _check_equal(fast: list[UsageRow], slow: list[UsageRow]) -> None:
    a = {r.group: (r.requests, r.prompt_tokens, r.completion_tokens) for r in fast}
    b = {r.group: (r.requests, r.prompt_tokens, r.completion_tokens) for r in slow}
    if a != b:
        raise AssertionError("summarize() disagrees with the raw aggregation")
    for f, s in zip(
        sorted(fast, key=lambda r: r.group), sorted(slow, key=lambda r: r.group), strict=True
    ):
        if abs(f.cost_usd - s.cost_usd) > 1e-9 * max(1.0, abs(s.cost_usd)):
            raise AssertionError(f"cost differs for {f.group}: {f.cost_usd} vs {s.cost_usd}")


def _events(n: int, now: float) -> list[UsageEvent]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        k = rng.randrange(200)
        m = k % 8
        out.append(
            UsageEvent(
                ts=now + i * 0.001,
                request_id=f"w-{i}",
                tenant_id=f"tenant-{k % 50}",
                key_id=f"key-{k}",
                endpoint="chat",
                alias=f"model-{m}",
                deployment=f"model-{m}-{rng.randrange(2)}",
                route_reason="least_loaded",
                stream=False,
                prompt_tokens=rng.randrange(10, 3000),
                completion_tokens=rng.randrange(1, 800),
                tokens_estimated=False,
                cost_usd=rng.random() / 100,
                energy_wh=rng.random() / 10,
                status=200,
                error_type=None,
                ttft_ms=None,
                latency_ms=rng.uniform(200, 4000),
                config_revision="bench",
            )
        )
    return out


def writer_throughput(url: str, n: int, batch_size: int) -> tuple[float, float]:
    """Rows/s of the ledger writer (events + rollups per batch, one transaction
    each), and of the same event inserts in the same batches without rollups."""
    engine = make_engine(url)
    upgrade(engine)
    events = _events(n, time.time())
    writer = LedgerWriter(engine, queue_size=n + 1, batch_size=batch_size, flush_interval_s=0.05)
    writer.start()
    t = time.perf_counter()
    for e in events:
        writer.submit(e)
    writer.close(timeout=600)
    with_rollups = n / (time.perf_counter() - t)
    assert writer.written == n, writer.written
    # The same rows under new request ids (the ledger keeps one row per id).
    rows = [{**e.row(), "request_id": f"e-{i}"} for i, e in enumerate(events)]
    t = time.perf_counter()
    for i in range(0, n, batch_size):
        with engine.begin() as conn:
            insert_events(conn, rows[i : i + batch_size])
    events_only = n / (time.perf_counter() - t)
    engine.dispose()
    return with_rollups, events_only


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--writer-rows", type=int, default=50_000)
    args = parser.parse_args()

    server = PostgresServer(settings=DURABLE).start()
    try:
        with psycopg.connect(server.dsn()) as conn:
            pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        print(f"PostgreSQL {pg_version} on port {server.port}", flush=True)

        print("writer throughput", flush=True)
        writer_rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for batch in (100, 500):
                for name, url in (
                    ("SQLite (WAL, synchronous=NORMAL)", f"sqlite:///{Path(tmp) / f'w{batch}.db'}"),
                    ("PostgreSQL (fsync on)", server.fresh_database()),
                ):
                    both, plain = writer_throughput(url, args.writer_rows, batch)
                    print(f"  {name}, batch {batch}: {both:,.0f} rows/s ({plain:,.0f} events only)")
                    writer_rows.append((name, batch, both, plain))

        url = server.fresh_database("ledger_scale")
        now = time.time()
        print(f"generating {args.rows:,} events", flush=True)
        phases = generate(server, url, args.rows, now)
        engine = make_engine(url)
        sizes = {t.name: _count(engine, t) for t in (usage_events, usage_hourly, usage_daily)}
        print(f"  rows: {sizes}", flush=True)
        print("queries", flush=True)
        queries = time_queries(engine, now, args.repeat)
        engine.dispose()
    finally:
        server.stop()

    print()
    print(
        f"Machine: {platform.machine()}, {_cpus()} CPUs ({_cpu_model()}), Python "
        f"{platform.python_version()}, PostgreSQL {pg_version}, SQLAlchemy {sa.__version__}, "
        f"psycopg {psycopg.__version__}."
    )
    print(f"Command: `.venv/bin/python -m bench.ledger_scale --rows {args.rows}`")
    print()
    print("| table | rows |\n|---|---:|")
    for name, n in sizes.items():
        print(f"| {name} | {n:,} |")
    print()
    print("| load step | seconds |\n|---|---:|")
    for step, seconds in phases.items():
        print(f"| {step} | {seconds:.1f} |")
    print()
    print(
        "| window | by | summarize() (rollups) | raw events | speed-up |\n|---|---|---:|---:|---:|"
    )
    for window, by, t_roll, t_raw in queries:
        print(
            f"| {window} | {by} | {t_roll * 1000:.1f} ms | {t_raw * 1000:,.0f} ms "
            f"| {t_raw / t_roll:,.0f}x |"
        )
    print()
    print("| backend | batch | writer: events + rollups | events only |\n|---|---:|---:|---:|")
    for name, batch, both, plain in writer_rows:
        print(f"| {name} | {batch} | {both:,.0f} rows/s | {plain:,.0f} rows/s |")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
