"""The Responses codec bound to one request (gateway/responses.py): its
replies carry the request's id, and only the reply the client gets is kept,
once; a stream of a try that is not committed (a hedge's loser) keeps nothing."""

from __future__ import annotations

from typing import Any

from forebay.gateway.responses import BoundResponses
from forebay.protocols.canonical import (
    GenReply,
    PartStart,
    PartStop,
    Stop,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    Usage,
)
from forebay.protocols.openai_responses_reply import ResponseContext

WHOLE: list[StreamEvent] = [
    StreamStart("up", "m"),
    PartStart(0, "text"),
    TextDelta(0, "hi"),
    PartStop(0),
    StreamEnd(StopReason(Stop.END), Usage(3, 1)),
]


def _bound() -> tuple[BoundResponses, ResponseContext, list[dict[str, Any]]]:
    kept: list[dict[str, Any]] = []
    ctx = ResponseContext(model="alias")
    return BoundResponses(ctx, kept.append), ctx, kept


def test_a_whole_reply_is_encoded_under_the_requests_id_and_kept() -> None:
    codec, ctx, kept = _bound()
    reply = GenReply("upstream-id", "m", [TextPart("hi")], StopReason(Stop.END), Usage(3, 1))
    body = codec.encode_reply(reply)
    assert body["id"] == ctx.id and body["model"] == "alias"
    assert kept == [body]


def test_a_stream_is_kept_only_once_committed_and_only_once() -> None:
    codec, ctx, kept = _bound()
    loser = codec.stream_encoder(include_usage=True)
    for event in WHOLE:
        loser.encode(event)
    assert kept == []  # never committed: a hedge's loser
    winner = codec.stream_encoder(include_usage=True)
    out = winner.encode(WHOLE[0])
    assert b"response.created" in out and kept == []
    winner.commit()  # type: ignore[attr-defined]
    for event in WHOLE[1:]:
        winner.encode(event)
    assert len(kept) == 1 and kept[0]["id"] == ctx.id and kept[0]["status"] == "completed"
    winner.encode(StreamError("late"))
    assert len(kept) == 1


def test_a_stream_whole_before_its_commit_is_kept_at_the_commit() -> None:
    codec, _, kept = _bound()
    enc = codec.stream_encoder(include_usage=True)
    for event in WHOLE:
        enc.encode(event)
    enc.commit()  # type: ignore[attr-defined]
    assert [k["output"][0]["content"][0]["text"] for k in kept] == ["hi"]
