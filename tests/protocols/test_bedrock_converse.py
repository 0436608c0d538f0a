"""The Bedrock Converse codec on its own: the request shape Converse documents,
replies and event-stream frames decoded whatever the chunking, and malformed
upstream output as an UpstreamFailure or StreamError, never another exception."""

from __future__ import annotations

import pytest

from forebay.errors import ForebayError, UpstreamFailure
from forebay.protocols.bedrock_converse import BedrockConverseCodec
from forebay.protocols.canonical import (
    FilePart,
    GenRequest,
    ImagePart,
    Message,
    OutputFormat,
    PartStart,
    Reasoning,
    ReasoningDelta,
    Stop,
    StreamEnd,
    StreamError,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolChoice,
)
from tests.support.eventstream import event, exception, frame, garbled

CODEC = BedrockConverseCodec()


def feed_all(data: bytes, step: int) -> list[StreamEvent]:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    for i in range(0, len(data), step):
        events += decoder.feed(data[i : i + step])
    return events + decoder.close()


def test_request_shape() -> None:
    req = GenRequest(
        model="m",
        system=[TextPart("be brief", cache_control={"type": "ephemeral"})],
        messages=[
            Message(
                "user",
                [
                    TextPart("read"),
                    ImagePart(data="iVBO", media_type="image/png"),
                    FilePart(
                        data="JVBE", media_type="application/pdf", filename="Q3 report (final).pdf"
                    ),
                ],
            ),
            Message("user", [TextPart("now")]),
        ],
        tools=[Tool("f", "does f", {"type": "object"})],
        tool_choice=ToolChoice("required"),
        max_output_tokens=64,
        top_p=0.9,
        top_k=5,
        stop=["END"],
        reasoning=Reasoning(budget_tokens=2048),
        output=OutputFormat("json_schema", "out", {"type": "object"}),
    )
    body = CODEC.encode_request(req, "m")
    assert body["system"] == [{"text": "be brief"}, {"cachePoint": {"type": "default"}}]
    assert len(body["messages"]) == 1  # two user turns merged: Converse needs alternation
    content = body["messages"][0]["content"]
    assert content[1] == {"image": {"format": "png", "source": {"bytes": "iVBO"}}}
    assert content[2] == {
        "document": {"format": "pdf", "name": "Q3 report (final)", "source": {"bytes": "JVBE"}}
    }
    assert body["inferenceConfig"] == {"maxTokens": 64, "topP": 0.9, "stopSequences": ["END"]}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert body["toolConfig"]["tools"][0] == {
        "toolSpec": {
            "name": "f",
            "inputSchema": {"json": {"type": "object"}},
            "description": "does f",
        }
    }
    assert body["additionalModelRequestFields"] == {
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    assert body["outputConfig"]["textFormat"]["structure"]["jsonSchema"] == {
        "schema": '{"type":"object"}',
        "name": "out",
    }


@pytest.mark.parametrize(
    "part",
    [
        ImagePart(url="https://example.com/cat.png"),
        ImagePart(data="x", media_type="image/bmp"),
        FilePart(data="x", media_type="application/zip"),
    ],
)
def test_media_bedrock_cannot_take_is_a_400(part: ImagePart | FilePart) -> None:
    with pytest.raises(ForebayError) as caught:
        CODEC.encode_request(GenRequest(model="m", messages=[Message("user", [part])]), "m")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("word", "kind"),
    [
        ("end_turn", Stop.END),
        ("tool_use", Stop.TOOL_CALLS),
        ("max_tokens", Stop.MAX_TOKENS),
        ("stop_sequence", Stop.STOP_SEQUENCE),
        ("guardrail_intervened", Stop.CONTENT_FILTER),
        ("content_filtered", Stop.CONTENT_FILTER),
        ("model_context_window_exceeded", Stop.CONTEXT_WINDOW),
        ("something_new", Stop.OTHER),
    ],
)
def test_stop_reasons_keep_their_word(word: str, kind: Stop) -> None:
    reply = CODEC.decode_reply(
        {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": word}
    )
    assert (reply.stop.kind, reply.stop.raw) == (kind, word)


def test_usage_by_hand() -> None:
    reply = CODEC.decode_reply(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": 11,
                "outputTokens": 4,
                "totalTokens": 1515,
                "cacheReadInputTokens": 1000,
                "cacheWriteInputTokens": 500,
            },
        }
    )
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (1511, 4)
    assert (reply.usage.cache_read_tokens, reply.usage.cache_write_tokens) == (1000, 500)


def _text_stream() -> bytes:
    return b"".join(
        [
            event("messageStart", {"role": "assistant"}),
            event(
                "contentBlockDelta",
                {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}},
            ),
            event(
                "contentBlockDelta",
                {
                    "contentBlockIndex": 0,
                    "delta": {"reasoningContent": {"redactedContent": "UkVE"}},
                },
            ),
            event("contentBlockStop", {"contentBlockIndex": 0}),
            event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hi"}}),
            event("contentBlockStop", {"contentBlockIndex": 1}),
            event("messageStop", {"stopReason": "max_tokens"}),
            event("metadata", {"usage": {"inputTokens": 2, "outputTokens": 1}, "metrics": {}}),
        ]
    )


@pytest.mark.parametrize("step", [1, 13, 100_000])
def test_stream_any_chunking(step: int) -> None:
    events = feed_all(_text_stream(), step)
    assert [(e.index, e.kind) for e in events if isinstance(e, PartStart)] == [
        (0, "reasoning"),
        (1, "text"),
    ]
    assert [e.redacted for e in events if isinstance(e, ReasoningDelta) and e.redacted] == ["UkVE"]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi"]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.stop.kind is Stop.MAX_TOKENS
    assert end.usage is not None and end.usage.input_tokens == 2


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (
            event("messageStart", {"role": "assistant"})
            + garbled(event("messageStop", {"stopReason": "end_turn"})),
            None,
        ),
        (exception("modelStreamErrorException", "the model broke"), "modelStreamErrorException"),
        (
            frame(
                {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "x"},
                b"",
            ),
            "InternalFailure",
        ),
        (frame({":message-type": "event", ":event-type": "messageStart"}, b"{not json"), None),
        (
            frame(
                {":message-type": "event", ":event-type": "contentBlockDelta"},
                b'{"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{"}}}',
            ),
            None,
        ),
        (event("messageStart", {"role": "assistant"}), None),  # EOF before messageStop
        (b"\x00\x00\x00\x10garbage-garbage!", None),
    ],
)
def test_malformed_streams_end_in_a_stream_error(data: bytes, kind: str | None) -> None:
    events = feed_all(data, 5)
    err = events[-1]
    assert isinstance(err, StreamError)
    assert not any(isinstance(e, StreamEnd) for e in events)
    if kind is not None:
        assert err.type == kind


@pytest.mark.parametrize("body", [[], {"output": "x"}, {"output": {"message": {"content": [1]}}}])
def test_malformed_replies_are_upstream_failures(body: object) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        CODEC.decode_reply(body)  # type: ignore[arg-type]
    assert caught.value.kind == "protocol"
