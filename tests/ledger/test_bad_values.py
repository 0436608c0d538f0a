"""No value can fail a ledger batch (issue 8, item 3), on SQLite and PostgreSQL:
every field is fitted to its column; a row the database still refuses is
isolated from the good ones, counted, logged without its values and kept in a
dead-letter file an operator can replay; nothing retries a permanent error;
and a request id already in the ledger is never written twice."""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, insert

from forebay.db.engine import make_engine
from forebay.db.migrate import MIGRATIONS, upgrade
from forebay.db.schema import usage_events
from forebay.ledger.commit import Committer
from forebay.ledger.events import UsageEvent
from forebay.ledger.replay import replay_spools
from forebay.ledger.writer import LedgerWriter
from tests.ledger.test_backends import (
    as_of_0001,
    assert_rollups_match_events,
    make_events,
    raw_rows,
)

INT32_MAX = 2**31 - 1


def _writer(engine: Engine, tmp_path: Path, rejected: list[int] | None = None) -> LedgerWriter:
    sink = rejected if rejected is not None else []
    return LedgerWriter(
        engine,
        queue_size=10_000,
        batch_size=10_000,  # one batch: a bad row must not take the others with it
        flush_interval_s=0.01,
        on_rejected=lambda: sink.append(1),
        dead_letter=tmp_path / "dead-letter.jsonl",
    )


def _write(writer: LedgerWriter, events: list[UsageEvent]) -> LedgerWriter:
    writer.start()
    for e in events:
        writer.submit(e)
    writer.close()
    return writer


def test_hostile_values_are_fitted_to_their_columns(ledger_engine: Engine, tmp_path: Path) -> None:
    base = make_events(seed=11, n=20)
    reason = ", ".join(
        f"deployment-with-a-long-realistic-name-{i} skipped: cooling down after 429"
        for i in range(60)
    )
    hostile: list[UsageEvent] = [
        replace(base[0], route_reason=reason),  # ~4,500 characters
        replace(base[1], alias="a" * 1000, deployment="d" * 1000, error_type="e" * 500),
        replace(base[2], tenant_id="t\x00nul", route_reason="nul\x00here", error_type="x\x00"),
        replace(base[3], alias="lone \udc80 surrogate", route_reason="\ud800"),
        replace(base[4], prompt_tokens=2**40, completion_tokens=2**70),
        replace(base[5], prompt_tokens=-(2**40), status=10**12),
        replace(base[6], cost_usd=math.nan, energy_wh=math.inf, latency_ms=-math.inf),
        replace(base[7], ttft_ms=math.nan),
        replace(base[8], status="200", stream=1, tokens_estimated="yes"),  # type: ignore[arg-type]
        replace(base[9], endpoint=12345, config_revision=None, key_id=b"bytes"),  # type: ignore[arg-type]
        replace(base[10], prompt_tokens=3.7, completion_tokens="many"),  # type: ignore[arg-type]
        replace(base[11], ts=math.nan),
    ]
    events = hostile + base[12:]
    writer = _write(_writer(ledger_engine, tmp_path), events)
    assert (writer.written, writer.rejected, writer.dropped, writer.failed_batches) == (
        len(events),
        0,
        0,
        0,
    ), "a fitted batch goes in whole, at the first attempt"
    rows = {r["request_id"]: r for r in raw_rows(ledger_engine)}
    got = [rows[e.request_id] for e in hostile]
    assert got[0]["route_reason"] == reason  # TEXT: kept whole
    assert (len(got[1]["alias"]), len(got[1]["deployment"]), len(got[1]["error_type"])) == (
        200,
        200,
        60,
    )
    assert "\x00" not in got[2]["tenant_id"] + got[2]["route_reason"] + got[2]["error_type"]
    assert got[2]["tenant_id"].startswith("t") and got[2]["tenant_id"].endswith("nul")
    assert got[3]["alias"].startswith("lone ") and got[3]["alias"].encode()  # valid UTF-8
    assert (got[4]["prompt_tokens"], got[4]["completion_tokens"]) == (INT32_MAX, INT32_MAX)
    assert (got[5]["prompt_tokens"], got[5]["status"]) == (-(2**31), INT32_MAX)
    assert (got[6]["cost_usd"], got[6]["energy_wh"], got[6]["latency_ms"]) == (0.0, 0.0, 0.0)
    assert got[7]["ttft_ms"] is None
    assert (got[8]["status"], bool(got[8]["stream"]), bool(got[8]["tokens_estimated"])) == (
        200,
        True,
        True,
    )
    assert (got[9]["endpoint"], got[9]["config_revision"]) == ("12345", "")
    assert (got[10]["prompt_tokens"], got[10]["completion_tokens"]) == (3, 0)
    assert got[11]["ts"] == 0.0
    assert_rollups_match_events(ledger_engine)


@pytest.fixture
def poison(ledger_engine: Engine) -> str:
    """Make the database itself refuse rows whose endpoint is 'poison' (a
    permanent error no fitting prevents): a trigger on SQLite, a CHECK
    constraint on PostgreSQL."""
    with ledger_engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE usage_events ADD CONSTRAINT no_poison CHECK (endpoint <> 'poison')"
            )
            return "ALTER TABLE usage_events DROP CONSTRAINT no_poison"
        conn.exec_driver_sql(
            "CREATE TRIGGER no_poison BEFORE INSERT ON usage_events "
            "WHEN NEW.endpoint = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )
        return "DROP TRIGGER no_poison"


def test_a_row_the_database_refuses_is_isolated_counted_and_kept(
    ledger_engine: Engine, tmp_path: Path, poison: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = make_events(seed=12, n=100)
    bad = {3, 50, 99}
    for i in bad:
        events[i] = replace(events[i], endpoint="poison")
    rejected: list[int] = []
    with caplog.at_level(logging.INFO, logger="forebay.ledger"):
        writer = _write(_writer(ledger_engine, tmp_path, rejected), events)
    assert (writer.written, writer.rejected, writer.dropped) == (97, 3, 0)
    assert len(rejected) == 3  # the metric's callback
    good = {e.request_id for i, e in enumerate(events) if i not in bad}
    assert {r["request_id"] for r in raw_rows(ledger_engine)} == good
    assert_rollups_match_events(ledger_engine)
    # Never retried (a retry would log "retrying" and sleep); bisection costs
    # a few attempts per bad row, not one per row of the batch.
    assert "retrying" not in caplog.text and "gave up" not in caplog.text
    assert writer.failed_batches <= 2 + 2 * len(bad) * math.ceil(math.log2(len(events)))
    # Logged without the row's values.
    assert caplog.text.count("a usage event was refused by the database") == 3
    assert "poison" not in caplog.text and "req-12-" not in caplog.text
    # ...but kept, whole, where an operator finds it.
    letters = [
        orjson.loads(line)
        for line in (tmp_path / "dead-letter.jsonl").read_bytes().split(b"\n")
        if line
    ]
    assert sorted(d["done"]["request_id"] for d in letters) == sorted(
        events[i].request_id for i in bad
    )
    assert all(d["error"] and d["done"]["endpoint"] == "poison" for d in letters)

    # Once the cause is fixed, the dead letters are replayed like a spool.
    with ledger_engine.begin() as conn:
        conn.exec_driver_sql(poison)
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.move(tmp_path / "dead-letter.jsonl", spool / "recovered.000000.spool")
    found = replay_spools(spool, Committer(ledger_engine))
    assert (found.replayed, found.already, found.rejected) == (3, 0, 0)
    assert len(raw_rows(ledger_engine)) == 100 and not list(spool.iterdir())
    assert_rollups_match_events(ledger_engine)


def test_a_request_already_recorded_is_not_written_twice(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    events = make_events(seed=13, n=60)
    _write(_writer(ledger_engine, tmp_path), events[:40])
    # The same 40 again (a batch retried after its commit's acknowledgement was
    # lost), mixed with 20 new ones, some twice within the batch itself.
    again = _write(_writer(ledger_engine, tmp_path), events + events[50:])
    assert (again.written, again.duplicates, again.rejected, again.dropped) == (20, 50, 0, 0)
    rows = raw_rows(ledger_engine)
    assert sorted(r["request_id"] for r in rows) == sorted(e.request_id for e in events)
    assert_rollups_match_events(ledger_engine)  # nothing counted twice


def test_migration_removes_duplicates_and_recomputes_rollups(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    rows = [as_of_0001(e.row()) for e in make_events(seed=14, n=50)]
    with engine.begin() as conn:  # ten requests written twice, as a retried batch did
        conn.execute(insert(usage_events), rows + rows[:10])
    upgrade(engine)  # 0004's rollups count them twice too; 0007 removes them
    got = raw_rows(engine)
    assert sorted(r["request_id"] for r in got) == sorted(r["request_id"] for r in rows)
    assert_rollups_match_events(engine)
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(insert(usage_events), rows[:1])
    engine.dispose()
