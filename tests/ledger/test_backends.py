"""One conformance suite for the ledger on SQLite and on PostgreSQL: the
migrations, batched writes, rollups kept equal to the raw events, usage
summaries equal to a raw aggregation, retries and a flushing close()."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, event, insert, select

from forebay.db.engine import make_engine, normalize_url
from forebay.db.migrate import MIGRATIONS, upgrade
from forebay.db.schema import tenants, usage_events
from forebay.ledger.events import UsageEvent
from forebay.ledger.query import GROUPINGS, UsageRow, summarize, summarize_raw
from forebay.ledger.rollups import DAILY, HOURLY, ROLLUPS, Rollup, aggregate, rebuild
from forebay.ledger.writer import LedgerWriter

# The newest migration, whichever it is (not a number each new one must edit).
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()

DAY = 86400
T0 = 1_700_000_000 // DAY * DAY  # a UTC midnight


def make_events(seed: int, n: int) -> list[UsageEvent]:
    """Usage over three days, with missing tenants, keys and models, errors, and
    events on and just before hour and day boundaries."""
    rng = random.Random(seed)
    boundaries = [T0 + DAY, T0 + 2 * DAY, T0 + DAY + 7 * 3600]
    events = []
    for i in range(n):
        if i % 10 == 0:
            b = rng.choice(boundaries)
            ts = rng.choice([b, math.nextafter(b, 0), b + 1e-3, b - 1e-3])
        else:
            ts = T0 + rng.uniform(0, 3 * DAY)
        tenant = rng.choice(["t1", "t2", "t3", None])  # t3 has no tenants row
        key = None if tenant is None else rng.choice([f"{tenant}-k1", f"{tenant}-k2"])
        alias = rng.choice(["echo", "big", None])
        status = rng.choice([200, 200, 200, 400, 429, 499, 502])
        prompt, completion = rng.randrange(0, 5000), rng.randrange(0, 2000)
        cache_read = rng.randrange(0, prompt + 1) if rng.random() < 0.5 else 0
        events.append(
            UsageEvent(
                ts=ts,
                request_id=f"req-{seed}-{i}",
                tenant_id=tenant,
                key_id=key,
                endpoint="chat",
                alias=alias,
                deployment=None if alias is None else f"{alias}-{rng.choice('ab')}",
                route_reason=None,
                stream=rng.random() < 0.3,
                prompt_tokens=prompt,
                completion_tokens=completion,
                tokens_estimated=False,
                cost_usd=rng.random() / 100,
                energy_wh=rng.random() / 10,
                status=status,
                error_type=None if status < 400 else "err",
                ttft_ms=None,
                latency_ms=rng.uniform(5, 5000),
                config_revision="r1",
                cache_read_tokens=cache_read,
                cache_write_tokens=rng.randrange(0, prompt - cache_read + 1),
                reasoning_tokens=rng.randrange(0, completion + 1),
                protocol=rng.choice(["openai_chat", "openai_chat", "anthropic_messages"]),
            )
        )
    return events


def add_tenants(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(tenants),
            [
                {"id": "t1", "name": "acme", "created_at": 0.0},
                {"id": "t2", "name": "globex", "created_at": 0.0},
            ],
        )


def write(engine: Engine, events: list[UsageEvent], batch_size: int = 7) -> LedgerWriter:
    writer = LedgerWriter(engine, queue_size=100_000, batch_size=batch_size, flush_interval_s=0.01)
    writer.start()
    for e in events:
        writer.submit(e)
    writer.close()
    return writer


def raw_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(usage_events)).mappings()]


def rollup_rows(engine: Engine, rollup: Rollup) -> dict[tuple[Any, ...], dict[str, Any]]:
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(rollup.table)).mappings()]
    return {_key(rollup, r): r for r in rows}


def _key(rollup: Rollup, row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row[rollup.bucket_name],
        row["tenant_id"],
        row["key_id"],
        row["alias"],
        row["deployment"],
        row["protocol"],
    )


def assert_rollups_match_events(engine: Engine) -> None:
    events = raw_rows(engine)
    for rollup in ROLLUPS:
        want = {_key(rollup, r): r for r in aggregate(rollup, events)}
        got = rollup_rows(engine, rollup)
        assert set(got) == set(want), rollup.table.name
        for key, row in want.items():
            for col, value in row.items():
                if isinstance(value, str):
                    continue  # a key column, compared above
                assert got[key][col] == pytest.approx(value, rel=1e-9), (
                    rollup.table.name,
                    key,
                    col,
                )


def assert_same_summary(got: list[UsageRow], want: list[UsageRow]) -> None:
    assert sorted(r.group for r in got) == sorted(r.group for r in want)
    by_group = {r.group: r for r in got}
    for w in want:
        g = by_group[w.group]
        counts = ("requests", "errors", "prompt_tokens", "completion_tokens")
        counts += ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
        assert [getattr(g, c) for c in counts] == [getattr(w, c) for c in counts], w.group
        assert g.cost_usd == pytest.approx(w.cost_usd, rel=1e-9)
        assert g.energy_wh == pytest.approx(w.energy_wh, rel=1e-9)
        assert g.avg_latency_ms == pytest.approx(w.avg_latency_ms, rel=1e-9)


def test_migrations_apply_and_are_idempotent(ledger_engine: Engine) -> None:
    upgrade(ledger_engine)  # a second start-up finds nothing to do
    names = set(sa.inspect(ledger_engine).get_table_names())
    assert {"usage_events", "usage_hourly", "usage_daily", "tenants", "api_keys", "limits"} <= names
    indexes = {i["name"] for i in sa.inspect(ledger_engine).get_indexes("usage_events")}
    want = {"ix_usage_tenant_ts", "ix_usage_key_ts", "ix_usage_ts", "ux_usage_request_id"}
    assert want <= indexes
    with ledger_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD


def test_writer_persists_batches_and_keeps_rollups_equal_to_events(ledger_engine: Engine) -> None:
    events = make_events(seed=1, n=400)
    writer = write(ledger_engine, events, batch_size=7)  # many batches: upserts hit existing rows
    assert (writer.written, writer.dropped, writer.failed_batches) == (400, 0, 0)
    rows = raw_rows(ledger_engine)
    assert sorted(r["request_id"] for r in rows) == sorted(e.request_id for e in events)
    assert_rollups_match_events(ledger_engine)


@pytest.mark.parametrize("seed", [2, 3])
def test_summarize_equals_a_raw_aggregation(ledger_engine: Engine, seed: int) -> None:
    add_tenants(ledger_engine)
    write(ledger_engine, make_events(seed=seed, n=600), batch_size=50)
    rng = random.Random(seed)
    sinces = [0.0, T0, T0 + DAY, T0 + DAY + 3600, T0 + 4 * DAY, math.nextafter(T0 + DAY, 0)]
    sinces += [T0 + rng.uniform(-DAY, 3.5 * DAY) for _ in range(6)]
    for since in sinces:
        for by in GROUPINGS:
            assert_same_summary(
                summarize(ledger_engine, since=since, by=by),
                summarize_raw(ledger_engine, since=since, by=by),
            )


def test_summary_groups_and_names(ledger_engine: Engine) -> None:
    add_tenants(ledger_engine)
    events = make_events(seed=4, n=300)
    write(ledger_engine, events)
    since = T0 + 0.5 * DAY
    kept = [e for e in events if e.ts >= since]
    by_tenant = {r.group: r for r in summarize(ledger_engine, since=since, by="tenant")}
    assert set(by_tenant) == {"acme", "globex", "t3", "(no tenant)"}
    assert by_tenant["acme"].requests == sum(e.tenant_id == "t1" for e in kept)
    by_model = {r.group: r for r in summarize(ledger_engine, since=since, by="model")}
    assert by_model["(no model)"].requests == sum(e.alias is None for e in kept)
    assert by_model["big"].errors == sum(e.alias == "big" and e.status >= 400 for e in kept)
    assert by_model["echo"].prompt_tokens == sum(e.prompt_tokens for e in kept if e.alias == "echo")
    by_key = {r.group: r for r in summarize(ledger_engine, since=since, by="key")}
    assert by_key["t2-k1"].completion_tokens == sum(
        e.completion_tokens for e in kept if e.key_id == "t2-k1"
    )
    by_dep = summarize(ledger_engine, since=since, by="deployment")
    assert [r.cost_usd for r in by_dep] == sorted((r.cost_usd for r in by_dep), reverse=True)
    assert sum(r.requests for r in by_dep) == len(kept)
    assert summarize(ledger_engine, since=T0 + 10 * DAY, by="model") == []


def test_migration_backfills_rollups_from_existing_events(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    with engine.begin() as conn:  # events recorded before rollups (and traffic_class) existed
        rows = [e.row() for e in make_events(seed=5, n=300)]
        conn.execute(insert(usage_events), [as_of_0001(r) for r in rows])
    upgrade(engine)
    assert_rollups_match_events(engine)
    with engine.begin() as conn:  # and the repair path recomputes the same
        rebuild(conn)
    assert_rollups_match_events(engine)
    engine.dispose()


# Columns added after 0001, and what a row recorded before them meant.
LATER_COLUMNS = {
    "traffic_class": None,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "protocol": "openai_chat",
}


def as_of_0001(row: dict[str, Any]) -> dict[str, Any]:
    """An event row as the first schema recorded it: before the later columns."""
    return {k: v for k, v in row.items() if k not in LATER_COLUMNS}


def _migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_0008_keeps_rollups_and_reads_old_rows_as_openai_chat(ledger_url: str) -> None:
    """Rows from before 0008 get 0 cached and reasoning tokens and protocol
    openai_chat, in the events and (kept, not recomputed) in the rollups; a
    downgrade adds rollup rows that differ only in protocol back together."""
    engine = make_engine(ledger_url)
    _migrate(engine, "0003")
    old = [as_of_0001(e.row()) for e in make_events(seed=9, n=200)]
    with engine.begin() as conn:
        conn.execute(insert(usage_events), old)
    _migrate(engine, "0007")  # rollups backfilled from these events (0004)
    _migrate(engine, "0008")
    rows = raw_rows(engine)
    assert {r["protocol"] for r in rows} == {"openai_chat"}
    parts = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
    assert {tuple(r[p] for p in parts) for r in rows} == {(0, 0, 0)}
    assert_rollups_match_events(engine)  # 0007's rollups, kept: protocol openai_chat
    by_protocol = summarize(engine, since=0, by="protocol")
    assert [(r.group, r.requests) for r in by_protocol] == [("openai_chat", 200)]

    write(engine, make_events(seed=10, n=200))  # new rows with all three protocols' parts
    assert_rollups_match_events(engine)
    before = {r.group: r for r in summarize(engine, since=0, by="model")}
    _migrate(engine, "0007", down=True)
    with engine.connect() as conn:
        query = "SELECT alias, SUM(requests), SUM(prompt_tokens) FROM usage_daily GROUP BY alias"
        merged = conn.execute(sa.text(query)).all()
    assert {(a or "(no model)"): (n, p) for a, n, p in merged} == {
        g: (r.requests, r.prompt_tokens) for g, r in before.items()
    }
    upgrade(engine)  # and forward again: the sums are still those of the events
    after = {r.group: r for r in summarize(engine, since=0, by="model")}
    assert {g: r.requests for g, r in after.items()} == {g: r.requests for g, r in before.items()}
    assert {g: r.cost_usd for g, r in after.items()} == pytest.approx(
        {g: r.cost_usd for g, r in before.items()}, rel=1e-9
    )
    engine.dispose()


@pytest.fixture
def failing(ledger_engine: Engine) -> Iterator[list[int]]:
    """Fail writes to usage_daily (the last statement of a batch, after its
    events are inserted) while the returned list's first element is > 0, with
    the driver's OperationalError: what a lost connection raises."""
    remaining = [0]
    transient = ledger_engine.dialect.loaded_dbapi.OperationalError

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if remaining[0] and "usage_daily" in statement and statement.lstrip().startswith("INSERT"):
            remaining[0] -= 1
            raise transient("simulated database failure")

    event.listen(ledger_engine, "before_cursor_execute", fail)
    yield remaining
    event.remove(ledger_engine, "before_cursor_execute", fail)


def test_a_failed_batch_is_retried_whole(ledger_engine: Engine, failing: list[int]) -> None:
    failing[0] = 2
    events = make_events(seed=6, n=40)
    writer = write(ledger_engine, events, batch_size=1000)
    assert writer.failed_batches == 2 and writer.dropped == 0 and writer.written == 40
    assert len(raw_rows(ledger_engine)) == 40  # the failed attempts left nothing behind
    assert_rollups_match_events(ledger_engine)


def test_a_batch_given_up_is_counted_and_logged_without_its_values(
    ledger_engine: Engine, failing: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    failing[0] = 10**9
    dropped: list[int] = []
    writer = LedgerWriter(
        ledger_engine,
        queue_size=100,
        batch_size=100,
        flush_interval_s=0.01,
        on_dropped=lambda: dropped.append(1),
        retry_for_s=0.3,
    )
    writer.start()
    for e in make_events(seed=7, n=5):
        writer.submit(e)
    with caplog.at_level(logging.WARNING, logger="forebay.ledger"):
        writer.close()
    assert writer.dropped == 5 and len(dropped) == 5 and writer.written == 0
    assert writer.failed_batches >= 2
    assert "gave up writing 5 usage events" in caplog.text
    assert "simulated database failure" in caplog.text
    assert "req-7-" not in caplog.text  # no statement parameters in the logs
    assert raw_rows(ledger_engine) == []


def test_close_flushes_everything_queued(ledger_engine: Engine) -> None:
    writer = LedgerWriter(ledger_engine, queue_size=1000, batch_size=10_000, flush_interval_s=60)
    writer.start()
    for e in make_events(seed=8, n=120):
        writer.submit(e)
    writer.close()
    assert writer.written == 120 and len(raw_rows(ledger_engine)) == 120
    assert_rollups_match_events(ledger_engine)


def test_rollup_buckets_are_exact_floors() -> None:
    for rollup in (HOURLY, DAILY):
        w = rollup.width_s
        assert rollup.bucket_of(T0) * w == T0
        assert rollup.bucket_of(math.nextafter(T0, 0)) == T0 // w - 1
        assert rollup.first_whole_bucket(T0) * w == T0
        assert rollup.first_whole_bucket(T0 + 0.001) * w == T0 + w


def test_postgres_urls_mean_the_psycopg_driver() -> None:
    assert normalize_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


@given(
    since=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
def test_the_three_parts_of_a_window_partition_it(since: float, ts: float) -> None:
    """Every event with ts >= since is counted by exactly one part of summarize()."""
    first_hour = HOURLY.first_whole_bucket(since)
    first_day = DAILY.first_whole_bucket(since)
    in_raw = since <= ts < first_hour * HOURLY.width_s
    in_hourly = first_hour <= HOURLY.bucket_of(ts) < first_day * 24
    in_daily = DAILY.bucket_of(ts) >= first_day
    assert in_raw + in_hourly + in_daily == (1 if ts >= since else 0)


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    engines = [make_engine(postgres_url) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(upgrade, engines))  # raises if two raced to create a table
    with engines[0].connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
    for engine in engines:
        engine.dispose()
