"""Stored responses on SQLite and on a real PostgreSQL: read-your-writes before
the write lands, visibility to another replica after, delete, paging, expiry
and purge, the previous_response_id chain, and tenant isolation."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from forebay.db.engine import make_engine
from forebay.errors import ForebayError
from forebay.ledger.responses_store import ResponsesStore
from forebay.ledger.responses_table import StoredResponse
from tests.support.servers import free_port

DAY = 86400.0
StoreFactory = Callable[..., ResponsesStore]


def record(
    rid: str,
    *,
    tenant: str = "ten_a",
    previous: str | None = None,
    n_input: int = 1,
    created: float | None = None,
    retention: float = DAY,
) -> StoredResponse:
    created = time.time() if created is None else created
    items = [
        {"id": f"msg_{rid}_{i}", "role": "user", "parts": [{"type": "text", "text": f"q{i}"}]}
        for i in range(n_input)
    ]
    out = [{"id": f"msg_{rid}_out", "role": "assistant", "parts": [{"type": "text", "text": "a"}]}]
    body: dict[str, Any] = {"id": rid, "object": "response", "created_at": int(created)}
    return StoredResponse(
        id=rid,
        tenant_id=tenant,
        created_at=created,
        expires_at=created + retention,
        model="echo",
        status="completed",
        previous_response_id=previous,
        input=items,
        output=out,
        usage={"input_tokens": 3, "output_tokens": 1},
        body=body,
    )


@pytest.fixture
async def stores(ledger_engine: Engine) -> AsyncIterator[StoreFactory]:
    """Started stores on one database: each one is a replica."""
    made: list[ResponsesStore] = []

    def make(**kw: Any) -> ResponsesStore:
        store = ResponsesStore(ledger_engine, retention_s=kw.pop("retention_s", DAY), **kw)
        store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.stop()


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM responses")).scalar() or 0)


async def test_a_saved_response_is_readable_at_once_and_by_another_replica(
    stores: StoreFactory, ledger_engine: Engine
) -> None:
    here, there = stores(), stores()
    assert here.save(record("resp_1"))
    assert "resp_1" in here.pending  # not written yet: served from memory
    got = await here.get("ten_a", "resp_1")
    assert got is not None and got.input[0]["parts"][0]["text"] == "q0"
    await here.flush()
    assert here.pending == {} and rows(ledger_engine) == 1
    remote = await there.get("ten_a", "resp_1")
    assert remote == got


async def test_delete_pending_and_written_responses(
    stores: StoreFactory, ledger_engine: Engine
) -> None:
    store, other = stores(), stores()
    store.save(record("resp_w"))
    await store.flush()
    store.save(record("resp_p"))  # still pending when deleted
    assert await store.delete("ten_a", "resp_p")
    assert await store.delete("ten_a", "resp_w")
    assert await store.get("ten_a", "resp_p") is None
    assert await store.get("ten_a", "resp_w") is None
    assert not await store.delete("ten_a", "resp_w")  # twice: gone
    assert not await store.delete("ten_a", "resp_never")
    await store.flush()
    assert rows(ledger_engine) == 0
    assert await other.get("ten_a", "resp_p") is None


async def test_input_items_page_like_the_api(stores: StoreFactory) -> None:
    store = stores()
    store.save(record("resp_1", n_input=5))
    ids = [f"msg_resp_1_{i}" for i in range(5)]
    for flushed in (False, True):
        if flushed:
            await store.flush()
        page = await store.input_items("ten_a", "resp_1", limit=2)
        assert page is not None
        assert [d["id"] for d in page.data] == ids[::-1][:2] and page.has_more
        page = await store.input_items("ten_a", "resp_1", after=ids[3], limit=2)
        assert page is not None and [d["id"] for d in page.data] == ids[2::-1][:2]
        assert page.has_more
        page = await store.input_items("ten_a", "resp_1", order="asc", after=ids[2], limit=10)
        assert page is not None and [d["id"] for d in page.data] == ids[3:]
        assert not page.has_more
        page = await store.input_items("ten_a", "resp_1", after="msg_unknown")
        assert page is not None and page.data == [] and not page.has_more
    assert await store.input_items("ten_a", "resp_none") is None


async def test_expired_responses_are_not_found_and_are_purged(
    stores: StoreFactory, ledger_engine: Engine
) -> None:
    store = stores()
    old = record("resp_old", created=time.time() - 2 * DAY)  # expired a day ago
    store.save(old)
    store.save(record("resp_new"))
    assert await store.get("ten_a", "resp_old") is None  # even while pending
    await store.flush()
    assert await store.get("ten_a", "resp_old") is None
    assert await store.conversation("ten_a", "resp_old") is None
    assert rows(ledger_engine) == 2
    assert store.table.purge(time.time()) == 1
    assert rows(ledger_engine) == 1
    assert await store.get("ten_a", "resp_new") is not None


async def test_the_purge_task_runs_by_itself(stores: StoreFactory, ledger_engine: Engine) -> None:
    writer = stores()
    writer.save(record("resp_old", created=time.time() - 2 * DAY))
    await writer.flush()
    purger = stores(purge_interval_s=0.05)
    deadline = time.monotonic() + 10
    while rows(ledger_engine) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert rows(ledger_engine) == 0 and purger.purged == 1


async def test_conversation_walks_the_chain_oldest_first(stores: StoreFactory) -> None:
    store, other = stores(), stores()
    store.save(record("resp_a"))
    store.save(record("resp_b", previous="resp_a"))
    await store.flush()
    store.save(record("resp_c", previous="resp_b"))  # pending, its ancestors written
    chain = await store.conversation("ten_a", "resp_c")
    assert chain is not None and [r.id for r in chain] == ["resp_a", "resp_b", "resp_c"]
    await store.flush()
    chain = await other.conversation("ten_a", "resp_c")
    assert chain is not None and [r.id for r in chain] == ["resp_a", "resp_b", "resp_c"]
    assert await store.conversation("ten_a", "resp_missing") is None
    assert await store.delete("ten_a", "resp_b")  # a missing link ends the chain
    chain = await store.conversation("ten_a", "resp_c")
    assert chain is not None and [r.id for r in chain] == ["resp_c"]


async def test_a_chain_longer_than_max_chain_is_refused(stores: StoreFactory) -> None:
    store = stores(max_chain=3)
    previous = None
    for i in range(4):
        store.save(record(f"resp_{i}", previous=previous))
        previous = f"resp_{i}"
    chain = await store.conversation("ten_a", "resp_2")
    assert chain is not None and len(chain) == 3
    with pytest.raises(ForebayError) as pending_err:
        await store.conversation("ten_a", "resp_3")
    await store.flush()
    with pytest.raises(ForebayError) as written_err:
        await stores(max_chain=3).conversation("ten_a", "resp_3")
    for err in (pending_err.value, written_err.value):
        assert err.status == 400 and err.param == "previous_response_id"


async def test_another_tenant_can_neither_read_list_delete_nor_continue(
    stores: StoreFactory,
) -> None:
    store = stores()
    store.save(record("resp_a1"))
    store.save(record("resp_a2", previous="resp_a1"))
    for flushed in (False, True):
        if flushed:
            await store.flush()
        assert await store.get("ten_b", "resp_a1") is None
        assert await store.input_items("ten_b", "resp_a1") is None
        assert await store.conversation("ten_b", "resp_a2") is None
        assert not await store.delete("ten_b", "resp_a1")
        assert await store.get("ten_a", "resp_a1") is not None  # untouched by B's delete
    # B's own response naming A's as its previous one does not reach into A's chain.
    store.save(record("resp_b1", tenant="ten_b", previous="resp_a2"))
    chain = await store.conversation("ten_b", "resp_b1")
    assert chain is not None and [r.id for r in chain] == ["resp_b1"]


async def test_too_many_pending_saves_are_refused_and_counted(stores: StoreFactory) -> None:
    store = stores(max_pending=2)
    results = [store.save(record(f"resp_{i}")) for i in range(3)]  # no await: none written
    assert results == [True, True, False] and store.refused == 1
    await store.flush()
    assert await store.get("ten_a", "resp_2") is None
    assert store.save(record("resp_3"))  # room again once written


async def test_with_the_database_down_saves_stay_readable_and_stop_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = make_engine(f"postgresql+psycopg://forebay@127.0.0.1:{free_port()}/none")
    store = ResponsesStore(dead, retention_s=DAY)
    store.start()
    try:
        store.save(record("resp_a"))
        store.save(record("resp_b", previous="resp_a"))
        await asyncio.sleep(0.3)  # the writer has tried and is retrying
        assert await store.get("ten_a", "resp_b") is not None
        chain = await store.conversation("ten_a", "resp_b")
        assert chain is not None and [r.id for r in chain] == ["resp_a", "resp_b"]
        with pytest.raises(OperationalError):  # another tenant's read needs the database:
            await store.get("ten_b", "resp_a")  # it fails loudly, never "found"
    finally:
        started = time.monotonic()
        await store.stop(timeout_s=0.5)
        assert time.monotonic() - started < 5
        dead.dispose()
    assert "cannot write stored responses" in caplog.text
    assert "2 stored responses not written" in caplog.text


async def test_a_value_postgresql_refuses_is_fitted(stores: StoreFactory) -> None:
    store = stores()
    bad = dataclasses.replace(record("resp_nul"), model="ec\x00ho" + "x" * 300)
    store.save(bad)
    await store.flush()
    got = await stores().get("ten_a", "resp_nul")
    assert got is not None and got.model == ("echo" + "x" * 300)[:200]
    assert store.rejected == 0
