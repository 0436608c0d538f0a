# ruff: noqa: E501  (transcripts are kept verbatim, one event a line)
"""The Chat Completions codec against transcripts written by hand from
OpenAI's API reference (chat object, chunk object, streaming with
include_usage, tool calls) and vLLM's extensions to it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forebay.errors import ForebayError, UpstreamFailure
from forebay.protocols.canonical import (
    AudioPart,
    FilePart,
    GenReply,
    GenRequest,
    ImagePart,
    Message,
    OutputFormat,
    PartStart,
    PartStop,
    ReasoningPart,
    Stop,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    Tool,
    ToolArgsDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)
from forebay.protocols.registry import codec_for
from forebay.upstreams.base import WireProtocol

CODEC = codec_for(WireProtocol.OPENAI_CHAT)

REQUEST: dict[str, Any] = {
    "model": "gpt-4.1",
    "messages": [
        {"role": "developer", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "Use tools."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}, "strict": True}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True}},
    "max_completion_tokens": 300,
    "temperature": 0.2,
    "stop": "END",
    "seed": 7,
    "user": "u-1",
    "stream": True,
    "stream_options": {"include_usage": True},
}  # fmt: skip


def test_decode_request() -> None:
    req = CODEC.decode_request(REQUEST)
    assert [p.text for p in req.system] == ["Be terse.", "Use tools."]
    user, assistant, tool = req.messages
    assert user.parts == [
        TextPart("Look:"),
        ImagePart(data="iVBO", media_type="image/png", detail="low"),
        ImagePart(url="https://x.test/a.png"),
        AudioPart("UklG", "wav"),
        FilePart(data="JVBE", media_type="application/pdf", filename="a.pdf"),
    ]
    assert assistant.parts == [ToolCallPart("call_1", "f", '{"a":1}')]
    assert tool == Message("tool", [ToolResultPart("call_1", [TextPart("42")])])
    assert req.tools == [Tool("f", "F.", {"type": "object"}, strict=True)]
    assert req.tool_choice == ToolChoice("tool", "f", parallel=False)
    assert req.output == OutputFormat("json_schema", "out", {"type": "object"}, True)
    assert (req.max_output_tokens, req.temperature, req.stop, req.seed) == (300, 0.2, ["END"], 7)
    assert req.user == "u-1" and req.stream


def test_encode_request_splits_tool_results_into_tool_messages() -> None:
    req = GenRequest(
        model="alias",
        system=[TextPart("A."), TextPart("B.")],
        messages=[
            Message("user", [TextPart("hi")]),
            Message(
                "assistant",
                [ReasoningPart("hmm", signature="s"), TextPart("Let me look."), ToolCallPart("t1", "f", '{"x":1}')],
            ),
            Message(
                "user",
                [
                    ToolResultPart("t1", [TextPart("done"), ImagePart(data="iVBO", media_type="image/png")]),
                    TextPart("thanks"),
                ],
            ),
        ],
        tools=[Tool("f", None, {"type": "object"})],
        tool_choice=ToolChoice("required", parallel=False),
        max_output_tokens=64,
        top_k=5,
        stop=["###"],
        output=OutputFormat("json_object"),
        stream=True,
    )  # fmt: skip
    assert CODEC.encode_request(req, "upstream-model") == {
        "model": "upstream-model",
        "messages": [
            {"role": "system", "content": "A.\n\nB."},
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}],
                # signed thinking goes back to the upstream that signed it (LiteLLM's field)
                "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "s"}],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "done"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 64,
        "top_k": 5,
        "stop": ["###"],
        "response_format": {"type": "json_object"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip


@pytest.mark.parametrize(
    "patch",
    [
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": "hi"},
        {"n": 3},
        {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
        {"tool_choice": {"type": "function"}},
        {"response_format": {"type": "yaml"}},
        {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
    ],
)
def test_decode_refuses_what_cannot_be_translated(patch: dict[str, Any]) -> None:
    with pytest.raises(ForebayError) as err:
        CODEC.decode_request({**REQUEST, **patch})
    assert err.value.status == 400


# -- replies ---------------------------------------------------------------------

REPLY = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Calling.",
                "tool_calls": [
                    {"id": "call_abc", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 12},
    },
}  # fmt: skip


def test_decode_reply_and_back() -> None:
    reply = CODEC.decode_reply(REPLY)
    assert reply.parts == [TextPart("Calling."), ToolCallPart("call_abc", "f", '{"a":')]
    assert reply.stop == StopReason(Stop.TOOL_CALLS, "tool_calls")
    assert reply.usage == Usage(1117, 46, cache_read_tokens=1024, reasoning_tokens=12)
    assert CODEC.encode_reply(reply) == REPLY


@pytest.mark.parametrize(
    ("finish", "extra", "kind"),
    [
        ("stop", {}, Stop.END),
        ("stop", {"stop_reason": "###"}, Stop.STOP_SEQUENCE),  # vLLM names the stop string
        ("length", {}, Stop.MAX_TOKENS),
        ("content_filter", {}, Stop.CONTENT_FILTER),
        ("tool_calls", {}, Stop.TOOL_CALLS),
        ("abort", {}, Stop.OTHER),
    ],
)
def test_finish_reasons(finish: str, extra: dict[str, Any], kind: Stop) -> None:
    body = orjson.loads(orjson.dumps(REPLY))
    body["choices"][0] = {**body["choices"][0], "finish_reason": finish, **extra}
    stop = CODEC.decode_reply(body).stop
    assert stop.kind is kind and stop.raw == finish


@pytest.mark.parametrize(
    ("kind", "finish"),
    [
        (Stop.CONTENT_FILTER, "content_filter"),
        (Stop.REFUSAL, "content_filter"),
        (Stop.MAX_TOKENS, "length"),
        (Stop.PAUSE, "length"),
        (Stop.STOP_SEQUENCE, "stop"),
    ],
)
def test_canonical_stops_keep_their_meaning(kind: Stop, finish: str) -> None:
    body = CODEC.encode_reply(GenReply("x", "m", [TextPart("t")], StopReason(kind), None))
    assert body["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{"message": 3}]}])
def test_garbled_reply_is_a_protocol_failure(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamFailure) as err:
        CODEC.decode_reply(body)
    assert err.value.kind == "protocol"


# -- streams ---------------------------------------------------------------------


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    head: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"


def _call(index: int, **fn: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fn}]}


# Two parallel tool calls streamed by index, then the usage-only chunk.
STREAM = b"".join(
    [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Checking"}),
        _chunk(_call(0, id="call_a", type="function", function={"name": "f", "arguments": ""})),
        _chunk(_call(0, function={"arguments": '{"city":'})),
        _chunk(_call(0, function={"arguments": '"Paris"}'})),
        _chunk(_call(1, id="call_b", type="function", function={"name": "f", "arguments": "{}"})),
        _chunk({}, "tool_calls"),
        _chunk(None, usage={"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                            "prompt_tokens_details": {"cached_tokens": 4}}),
        b"data: [DONE]\n\n",
    ]
)  # fmt: skip

EVENTS: list[StreamEvent] = [
    StreamStart("chatcmpl-1", "m"),
    PartStart(0, "text"),
    TextDelta(0, "Checking"),
    PartStop(0),
    PartStart(1, "tool_call", "call_a", "f"),
    ToolArgsDelta(1, '{"city":'),
    ToolArgsDelta(1, '"Paris"}'),
    PartStop(1),
    PartStart(2, "tool_call", "call_b", "f"),
    ToolArgsDelta(2, "{}"),
    PartStop(2),
    StreamEnd(StopReason(Stop.TOOL_CALLS, "tool_calls"), Usage(20, 9, cache_read_tokens=4)),
]


@pytest.mark.parametrize("step", [len(STREAM), 1, 13])
def test_stream_decoder(step: int) -> None:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    for i in range(0, len(STREAM), step):
        events += decoder.feed(STREAM[i : i + step].replace(b"\n", b"\r\n"))
    assert events + decoder.close() == EVENTS


def test_stream_encoder_with_and_without_usage() -> None:
    for include_usage in (True, False):
        encoder = CODEC.stream_encoder(include_usage=include_usage)
        out = b"".join(encoder.encode(e) for e in EVENTS)
        frames = [f[6:] for f in out.strip().split(b"\n\n")]
        assert frames[-1] == b"[DONE]"
        chunks = [orjson.loads(f) for f in frames[:-1]]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert {c["id"] for c in chunks} == {"chatcmpl-1"}
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        assert deltas == [
            {"role": "assistant", "content": ""},
            {"content": "Checking"},
            _call(0, id="call_a", type="function", function={"name": "f", "arguments": ""}),
            _call(0, function={"arguments": '{"city":'}),
            _call(0, function={"arguments": '"Paris"}'}),
            _call(1, id="call_b", type="function", function={"name": "f", "arguments": ""}),
            _call(1, function={"arguments": "{}"}),
            {},
        ]
        assert chunks[len(deltas) - 1]["choices"][0]["finish_reason"] == "tool_calls"
        usage = [c["usage"] for c in chunks if not c["choices"]]
        want = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                "prompt_tokens_details": {"cached_tokens": 4}}  # fmt: skip
        assert usage == ([want] if include_usage else [])


def test_error_event_mid_stream() -> None:
    decoder = CODEC.stream_decoder()
    events = decoder.feed(
        _chunk({"content": "Hi"}) + b'data: {"error": {"message": "boom", "type": "internal"}}\n\n'
    )
    assert events[-1] == StreamError("boom", type="internal")
    assert decoder.feed(_chunk({"content": "more"})) == []
    assert decoder.close() == []


@pytest.mark.parametrize(
    "tail",
    [b'data: {"id":"c","choices":[{"del', _chunk({"content": "no end"}), b"data: <html>\n\n"],
)
def test_cut_or_garbled_stream_is_an_error(tail: bytes) -> None:
    decoder = CODEC.stream_decoder()
    events = decoder.feed(_chunk({"content": "Hi"}) + tail) + decoder.close()
    assert isinstance(events[-1], StreamError)
    assert sum(isinstance(e, StreamError) for e in events) == 1


def test_finish_without_done_still_ends() -> None:
    decoder = CODEC.stream_decoder()
    events = decoder.feed(_chunk({"content": "Hi"}, "length")) + decoder.close()
    assert events[-1] == StreamEnd(StopReason(Stop.MAX_TOKENS, "length"), None)
