"""The parts of POST /v1/responses around dispatch: a reply stored by
finish_create is continued at once by the next begin_create through
previous_response_id (read-your-writes, before the database write), a
streamed Response is stored as streamed, store: false stores nothing, and
another tenant cannot continue the conversation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forebay.api.responses import begin_create, finish_create
from forebay.db.engine import make_engine
from forebay.db.migrate import upgrade
from forebay.errors import ForebayError
from forebay.ledger.responses_store import ResponsesStore
from forebay.protocols.canonical import (
    GenReply,
    Message,
    PartStart,
    PartStop,
    Stop,
    StopReason,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    Usage,
)
from forebay.protocols.openai_responses import CODEC
from forebay.tenancy.keys import Principal

ALICE = Principal("key_a", "ten_a", "alice", None, False)
BOB = Principal("key_b", "ten_b", "bob", None, False)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ResponsesStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'forebay.db'}")
    upgrade(engine)
    s = ResponsesStore(engine, retention_s=3600)
    s.start()
    yield s
    await s.stop()
    engine.dispose()


def answer(text: str) -> GenReply:
    return GenReply("up", "upstream", [TextPart(text)], StopReason(Stop.END), Usage(5, 2))


async def test_a_stored_reply_is_continued_by_the_next_request(store: ResponsesStore) -> None:
    first = await begin_create(
        store, ALICE, {"model": "echo", "instructions": "Hi.", "input": "2+2?"}
    )
    body = CODEC.encode_reply(answer("4"), first.context)
    assert finish_create(store, first, body)
    assert body["id"] in store.pending  # not in the database yet
    second = await begin_create(
        store, ALICE, {"model": "echo", "input": "times 3?", "previous_response_id": body["id"]}
    )
    assert second.request.system == []  # instructions are not carried over
    assert second.request.messages == [
        Message("user", [TextPart("2+2?")]),
        Message("assistant", [TextPart("4")]),
        Message("user", [TextPart("times 3?")]),
    ]
    assert second.context.echo["previous_response_id"] == body["id"]
    got = await store.get("ten_a", body["id"])
    assert got is not None and got.body == body


async def test_a_streamed_response_is_stored_as_streamed(store: ResponsesStore) -> None:
    creation = await begin_create(
        store, ALICE, {"model": "echo", "input": "say hi", "stream": True}
    )
    assert creation.request.stream
    encoder = CODEC.stream_encoder(include_usage=True, ctx=creation.context)
    for event in (
        StreamStart("up", "upstream"),
        PartStart(0, "text"),
        TextDelta(0, "hi"),
        PartStop(0),
        StreamEnd(StopReason(Stop.END), Usage(3, 1)),
    ):
        encoder.encode(event)
    assert encoder.response is not None and encoder.response["id"] == creation.context.id
    finish_create(store, creation, encoder.response)
    await store.flush()
    got = await store.get("ten_a", creation.context.id)
    assert got is not None and got.body["output"][0]["content"][0]["text"] == "hi"
    assert got.output[0]["id"] == encoder.response["output"][0]["id"]


async def test_store_false_keeps_nothing(store: ResponsesStore) -> None:
    creation = await begin_create(store, ALICE, {"model": "echo", "input": "x", "store": False})
    body = CODEC.encode_reply(answer("y"), creation.context)
    assert not finish_create(store, creation, body)
    assert await store.get("ten_a", body["id"]) is None
    with pytest.raises(ForebayError) as err:
        await begin_create(
            store, ALICE, {"model": "echo", "input": "z", "previous_response_id": body["id"]}
        )
    assert err.value.status == 404 and err.value.code == "previous_response_not_found"


async def test_another_tenant_cannot_continue(store: ResponsesStore) -> None:
    creation = await begin_create(store, ALICE, {"model": "echo", "input": "secret"})
    body = CODEC.encode_reply(answer("kept"), creation.context)
    finish_create(store, creation, body)
    for flush in (False, True):
        if flush:
            await store.flush()
        with pytest.raises(ForebayError) as err:
            await begin_create(
                store, BOB, {"model": "echo", "input": "?", "previous_response_id": body["id"]}
            )
        assert err.value.status == 404 and err.value.param == "previous_response_id"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "echo", "input": "x", "store": "yes"}, "store"),
        ({"model": "echo", "input": "x", "previous_response_id": 5}, "previous_response_id"),
        ({"model": "echo", "input": [{"type": "nope"}]}, "input[0].type"),
    ],
)
async def test_bad_create_bodies_are_a_400(
    store: ResponsesStore, body: dict[str, object], param: str
) -> None:
    with pytest.raises(ForebayError) as err:
        await begin_create(store, ALICE, body)
    assert err.value.status == 400 and err.value.param == param
