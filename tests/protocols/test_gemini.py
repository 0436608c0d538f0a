"""The Gemini codec on its own: the request shape Gemini documents, replies and
SSE streams decoded whatever the chunking, and malformed upstream output as an
UpstreamFailure or StreamError, never another exception."""

from __future__ import annotations

import orjson
import pytest

from forebay.errors import ForebayError, UpstreamFailure
from forebay.protocols.canonical import (
    GenRequest,
    ImagePart,
    Message,
    OutputFormat,
    ReasoningPart,
    Stop,
    StreamEnd,
    StreamError,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from forebay.protocols.gemini import GeminiCodec

CODEC = GeminiCodec()


def sse(*chunks: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


def feed_all(data: bytes, step: int) -> list[StreamEvent]:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    for i in range(0, len(data), step):
        events += decoder.feed(data[i : i + step])
    return events + decoder.close()


def test_request_shape() -> None:
    req = GenRequest(
        model="m",
        system=[TextPart("be brief")],
        messages=[
            Message("user", [TextPart("look"), ImagePart(url="data:image/png;base64,iVBO")]),
            Message("assistant", [ToolCallPart("gid-1", "f", '{"a": 1}')]),
            Message("tool", [ToolResultPart("gid-1", [TextPart("boom")], is_error=True)]),
        ],
        tools=[Tool("f", None, {"type": "object"})],
        tool_choice=ToolChoice("tool", "f"),
        max_output_tokens=50,
        temperature=0.2,
        top_k=3,
        stop=["END"],
        seed=7,
        output=OutputFormat("json_schema", "s", {"type": "object"}),
    )
    body = CODEC.encode_request(req, "m")
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": "iVBO"}
    }
    assert body["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "f", "args": {"a": 1}, "id": "gid-1"}}],
    }
    response = body["contents"][2]["parts"][0]["functionResponse"]
    assert response == {"name": "f", "response": {"error": "boom"}, "id": "gid-1"}
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
    assert body["tools"] == [
        {"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}
    ]
    assert body["generationConfig"] == {
        "maxOutputTokens": 50,
        "temperature": 0.2,
        "topK": 3,
        "seed": 7,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }


@pytest.mark.parametrize(
    "messages",
    [
        [Message("assistant", [ToolCallPart("c", "f", "not json")])],
        [Message("tool", [ToolResultPart("unknown-call", [TextPart("x")])])],
    ],
)
def test_requests_gemini_cannot_take_are_a_400(messages: list[Message]) -> None:
    with pytest.raises(ForebayError) as caught:
        CODEC.encode_request(GenRequest(model="m", messages=messages), "m")
    assert caught.value.status == 400


def test_reply_usage_by_hand() -> None:
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "hi"}, {"text": " there"}]},
                "finishReason": "MAX_TOKENS",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 120,
            "cachedContentTokenCount": 100,
            "candidatesTokenCount": 9,
            "thoughtsTokenCount": 30,
            "toolUsePromptTokenCount": 5,
        },
        "responseId": "r1",
        "modelVersion": "gemini-2.5-pro",
    }
    reply = CODEC.decode_reply(body)
    assert (reply.id, reply.model) == ("r1", "gemini-2.5-pro")
    assert [p.text for p in reply.parts if isinstance(p, TextPart)] == ["hi there"]
    assert reply.stop.kind is Stop.MAX_TOKENS
    assert reply.usage is not None
    assert reply.usage.input_tokens == 125  # prompt (cached inside it) + tool-use prompt
    assert reply.usage.cache_read_tokens == 100
    assert reply.usage.output_tokens == 39  # candidates + thoughts, counted outside them
    assert reply.usage.reasoning_tokens == 30


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("SAFETY", Stop.CONTENT_FILTER),
        ("RECITATION", Stop.CONTENT_FILTER),
        ("SPII", Stop.CONTENT_FILTER),
        ("BLOCKLIST", Stop.CONTENT_FILTER),
        ("MALFORMED_FUNCTION_CALL", Stop.ERROR),
        ("OTHER", Stop.OTHER),
    ],
)
def test_finish_reasons_keep_their_word(reason: str, kind: Stop) -> None:
    reply = CODEC.decode_reply({"candidates": [{"finishReason": reason}]})
    assert (reply.stop.kind, reply.stop.raw) == (kind, reason)


def test_signature_goes_back_on_its_part() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "plan", "thought": True},
                        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "SIG"},
                    ]
                },
                "finishReason": "STOP",
            }
        ]
    }
    reply = CODEC.decode_reply(body)
    assert [type(p) for p in reply.parts] == [ReasoningPart, ReasoningPart, ToolCallPart]
    again = CODEC.encode_request(
        GenRequest(model="m", messages=[Message("assistant", reply.parts)]), "m"
    )
    parts = again["contents"][0]["parts"]
    assert parts[0] == {"text": "plan", "thought": True}
    assert parts[1] == {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "SIG"}


@pytest.mark.parametrize("step", [1, 5, 10_000])
def test_stream_any_chunking(step: int) -> None:
    data = sse(
        {"candidates": [{"content": {"parts": [{"text": "Hel"}]}}], "responseId": "r"},
        {
            "candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
        },
    )
    events = feed_all(data, step)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello"
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.usage is not None and end.usage.output_tokens == 2


@pytest.mark.parametrize(
    "data",
    [
        b"data: {not json\r\n\r\n",
        b"data: [1, 2]\r\n\r\n",
        b"<html>502 Bad Gateway</html>\n",
        sse({"candidates": [{"content": {"parts": ["text"]}}]}),
        sse({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}),  # no finishReason
        b"",
    ],
)
def test_malformed_streams_end_in_a_stream_error(data: bytes) -> None:
    events = feed_all(data, 3)
    assert isinstance(events[-1], StreamError)
    assert not any(isinstance(e, StreamEnd) for e in events)


@pytest.mark.parametrize("body", [[], "x", {"candidates": ["no"]}, {"error": {"code": 500}}])
def test_malformed_replies_are_upstream_failures(body: object) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        CODEC.decode_reply(body)  # type: ignore[arg-type]
    assert caught.value.kind == "protocol"


def test_client_side_is_not_offered() -> None:
    with pytest.raises(NotImplementedError):
        CODEC.decode_request({})
