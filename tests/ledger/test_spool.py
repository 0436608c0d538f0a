"""The spool (issue 8, item 4), on SQLite and PostgreSQL: a process SIGKILLed
while its writer holds events leaves them in its spool; the next start writes
them, records requests in flight as interrupted, skips what was committed,
and a second replay of the same files adds nothing. A live process's spool is
never taken over, and committed segments are deleted as the writer goes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine

from forebay.ledger.commit import Committer
from forebay.ledger.records import EVENT_FIELDS
from forebay.ledger.replay import INTERRUPTED, INTERRUPTED_STATUS, replay_spools
from forebay.ledger.spool import Spool
from forebay.ledger.writer import LedgerWriter
from tests.ledger.test_backends import assert_rollups_match_events, make_events, raw_rows

# Run in a child process that is then SIGKILLed: a real writer and spool on
# `url`, small segments (so they rotate), one request that never finishes, and
# events written in two phases: committed ones, then ones still queued when the
# process dies (the writer's flush interval is an hour).
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from forebay.db.engine import make_engine
    from forebay.ledger.spool import Spool
    from forebay.ledger.writer import LedgerWriter
    from tests.ledger.test_backends import make_events

    url, spool_dir = sys.argv[1], Path(sys.argv[2])
    committed, queued = int(sys.argv[3]), int(sys.argv[4])
    spool = Spool(spool_dir, segment_bytes=4096).open()
    events = make_events(seed=21, n=committed + queued)

    def begin(e):
        spool.begin(e.request_id, {"request_id": e.request_id, "ts": e.ts, "tenant_id": e.tenant_id,
                                   "key_id": e.key_id, "endpoint": "chat", "alias": e.alias,
                                   "stream": True, "traffic_class": "batch",
                                   "config_revision": "r1"})
        spool.routed(e.request_id, {"request_id": e.request_id, "deployment": "dep-a",
                                    "route_reason": "first try"})
        spool.routed(e.request_id, {"request_id": e.request_id, "deployment": "dep-b",
                                    "route_reason": "retried"})

    stuck = make_events(seed=22, n=1)[0]
    begin(stuck)  # in flight from the start: carried into every new segment
    writer = LedgerWriter(make_engine(url), queue_size=10_000, batch_size=50,
                          flush_interval_s=0.01, spool=spool)
    writer.start()
    for e in events[:committed]:
        begin(e)
        writer.submit(e)
    while writer.written < committed:
        time.sleep(0.01)
    time.sleep(0.2)  # the last settle
    print(len(os.listdir(spool_dir)), flush=True)
    writer._interval = 3600.0  # nothing more reaches the database
    time.sleep(0.1)  # the writer's 10 ms wait ends and its hour-long one begins
    for e in events[committed : committed + queued]:
        begin(e)
        writer.submit(e)
    late = make_events(seed=23, n=2)
    for e in late:
        begin(e)  # in flight at the kill
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _run_and_kill(url: str, spool_dir: Path, committed: int, queued: int) -> int:
    """The number of files in the spool once the first events were committed."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(spool_dir), str(committed), str(queued)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return int(proc.stdout.strip())


def test_a_killed_process_loses_nothing_and_replay_is_idempotent(
    ledger_engine: Engine, ledger_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    files_when_committed = _run_and_kill(ledger_url, spool_dir, committed=300, queued=40)
    # Committed segments were deleted as the writer went (300 requests of ~1 KB
    # of records in 4 KiB segments is ~75 rotations): the lock, and a segment or two.
    assert files_when_committed <= 3
    assert len(raw_rows(ledger_engine)) == 300
    kept = tmp_path / "kept"
    shutil.copytree(spool_dir, kept)

    first = replay_spools(spool_dir, Committer(ledger_engine), batch_size=16)
    assert first.owners == 1
    assert first.replayed == 40  # served, queued, never written: recovered
    assert first.interrupted == 3  # `stuck` and the two late ones
    assert first.rejected == first.unreadable == first.kept == 0
    assert not list(spool_dir.iterdir()), "a replayed spool is removed"
    rows = {r["request_id"]: r for r in raw_rows(ledger_engine)}
    assert len(rows) == 343
    want = {e.request_id for e in make_events(seed=21, n=340)}
    assert want <= set(rows)
    cut = [r for r in rows.values() if r["error_type"] == INTERRUPTED]
    assert len(cut) == 3
    for r in cut:
        assert r["status"] == INTERRUPTED_STATUS and r["stream"]
        assert (r["deployment"], r["route_reason"], r["traffic_class"]) == (
            "dep-b",
            "retried",
            "batch",
        )
        assert r["tenant_id"] is not None or r["key_id"] is None
        assert r["latency_ms"] >= 0 and r["tokens_estimated"]
    assert_rollups_match_events(ledger_engine)

    # The same files again (say a replay whose deletion never happened): nothing added.
    shutil.rmtree(spool_dir)
    shutil.copytree(kept, spool_dir)
    second = replay_spools(spool_dir, Committer(ledger_engine), batch_size=16)
    assert (second.replayed, second.interrupted) == (0, 0)
    assert second.already == first.replayed + first.interrupted + first.already
    assert len(raw_rows(ledger_engine)) == 343
    assert_rollups_match_events(ledger_engine)


def test_a_live_spool_is_left_alone_and_a_clean_close_leaves_nothing(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    live = Spool(spool_dir, segment_bytes=4096).open()
    writer = LedgerWriter(
        ledger_engine, queue_size=1000, batch_size=20, flush_interval_s=0.01, spool=live
    )
    writer.start()
    events = make_events(seed=24, n=100)
    for e in events:
        writer.submit(e)
    found = replay_spools(spool_dir, Committer(ledger_engine))
    assert found.owners == 0 and found.replayed == 0  # its owner holds the lock
    writer.close()
    assert writer.written == 100
    assert not list(spool_dir.iterdir()), "everything committed: no file left"
    assert len(raw_rows(ledger_engine)) == 100


def test_a_spool_write_that_fails_does_not_fail_the_request(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    errors: list[int] = []
    spool = Spool(spool_dir, on_error=lambda: errors.append(1)).open()
    (event,) = make_events(seed=25, n=1)
    assert spool._segment is not None
    spool._segment.map.close()  # the mapping goes away under it: copies now fail
    assert spool.done(event) == -1
    assert errors == [1] and spool.errors == 1
    spool._segment = None  # nothing left to close
    spool.close()


@pytest.mark.parametrize("huge", [2**70, -(2**70)])
def test_an_event_orjson_cannot_encode_is_still_spooled(tmp_path: Path, huge: int) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir).open()
    (event,) = make_events(seed=26, n=1)
    event.prompt_tokens = huge
    assert spool.done(event) == 0
    assert b'"prompt_tokens":' in spool.path(0).read_bytes()
    spool.settle([0])
    spool.close()


def test_many_requests_in_flight_do_not_rotate_the_spool_at_every_record(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, segment_bytes=4096).open()
    for e in make_events(seed=27, n=200):  # ~30 KB of begun records, carried at each rotation
        spool.begin(e.request_id, {"request_id": e.request_id, "ts": e.ts, "alias": e.alias})
    for e in make_events(seed=28, n=50):  # ~12 KB of done records: three segments' worth
        spool.done(e)
    segments = list(spool_dir.glob("*.spool"))
    assert len(segments) <= 5, "rotated per record"
    assert sum(p.stat().st_size for p in segments) < 200_000
    spool.close()


# The fields of a `done` record before migration 0008 (a spool such a version left).
NEW_IN_0008 = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "protocol")
FIELDS_0007 = [f for f in EVENT_FIELDS if f not in NEW_IN_0008]


def test_a_spool_from_before_cached_tokens_and_protocol_still_replays(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    """A segment written by the version before 0008: its header lacks the new
    fields, a `begun` record has no protocol. Its rows read as what that version
    meant: no cached or reasoning tokens, protocol openai_chat."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    served, cut = make_events(seed=29, n=2)
    old = {f: getattr(served, f) for f in FIELDS_0007}
    begun = {
        "request_id": cut.request_id,
        "ts": cut.ts,
        "endpoint": "chat",
        "stream": False,
        "alias": cut.alias,
        "config_revision": "r0",
    }
    (spool_dir / "4242-abcd.000000.spool").write_bytes(
        orjson.dumps({"fields": FIELDS_0007})
        + b"\n"
        + orjson.dumps({"begun": begun})
        + b"\n"
        + orjson.dumps({"done": [old[f] for f in FIELDS_0007]})
        + b"\n"
    )
    result = replay_spools(spool_dir, Committer(ledger_engine))
    assert (result.replayed, result.interrupted, result.rejected) == (1, 1, 0)
    rows = {r["request_id"]: r for r in raw_rows(ledger_engine)}
    for rid in (served.request_id, cut.request_id):
        row = rows[rid]
        assert row["protocol"] == "openai_chat"
        parts = (row["cache_read_tokens"], row["cache_write_tokens"], row["reasoning_tokens"])
        assert parts == (0, 0, 0)
    assert rows[served.request_id]["prompt_tokens"] == served.prompt_tokens
    assert rows[served.request_id]["cost_usd"] == pytest.approx(served.cost_usd)
    assert rows[cut.request_id]["error_type"] == INTERRUPTED
    assert_rollups_match_events(ledger_engine)


def test_a_spool_keeps_cached_tokens_and_protocol(ledger_engine: Engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").open()
    (event,) = make_events(seed=30, n=1)
    event.prompt_tokens, event.cache_read_tokens, event.cache_write_tokens = 900, 500, 100
    event.completion_tokens, event.reasoning_tokens = 300, 120
    event.protocol = "anthropic_messages"
    spool.done(event)
    begun = {
        "request_id": "req-cut",
        "ts": event.ts,
        "endpoint": "messages",
        "stream": True,
        "config_revision": "r1",
        "protocol": "openai_responses",
    }
    spool.begin("req-cut", begun)
    copied = tmp_path / "copied"  # the segments without their live owner's lock
    copied.mkdir()
    for path in (tmp_path / "spool").glob("*.spool"):
        shutil.copy(path, copied / path.name)
    spool.close()
    result = replay_spools(copied, Committer(ledger_engine))
    assert (result.replayed, result.interrupted) == (1, 1)
    rows = {r["request_id"]: r for r in raw_rows(ledger_engine)}
    row = rows[event.request_id]
    got = [
        row[c]
        for c in (
            "prompt_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "completion_tokens",
            "reasoning_tokens",
            "protocol",
        )
    ]
    assert got == [900, 500, 100, 300, 120, "anthropic_messages"]
    assert rows["req-cut"]["protocol"] == "openai_responses"
    assert_rollups_match_events(ledger_engine)
