# ruff: noqa: E501  (transcripts are kept verbatim, one event a line)
"""The Anthropic Messages codec against transcripts written by hand from
Anthropic's API reference (Messages, streaming, prompt caching, extended
thinking, tool use)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forebay.errors import ForebayError, UpstreamFailure
from forebay.protocols.canonical import (
    FilePart,
    GenReply,
    ImagePart,
    PartStart,
    PartStop,
    ReasoningDelta,
    ReasoningPart,
    Stop,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from forebay.protocols.registry import codec_for
from forebay.upstreams.base import WireProtocol

CODEC = codec_for(WireProtocol.ANTHROPIC_MESSAGES)

REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": [
        {"type": "text", "text": "You are a weather bot."},
        {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                    "title": "report.pdf",
                },
                {"type": "text", "text": "What's the weather in Paris?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Call the tool.", "signature": "sig=="},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A",
                    "content": [{"type": "text", "text": "21 C"}],
                    "is_error": False,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather by city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "metadata": {"user_id": "user-42"},
    "stream": True,
}


def test_decode_request_keeps_every_field() -> None:
    req = CODEC.decode_request(orjson.loads(orjson.dumps(REQUEST)))
    assert [p.text for p in req.system] == ["You are a weather bot.", "Long context."]
    assert req.system[1].cache_control == {"type": "ephemeral"}
    user, assistant, results = req.messages
    assert user.parts[0] == ImagePart(data="/9j/4AAQ", media_type="image/jpeg")
    assert user.parts[1] == ImagePart(url="https://x.test/a.png")
    assert user.parts[2] == FilePart(
        data="JVBE", media_type="application/pdf", filename="report.pdf"
    )
    assert assistant.parts == [
        ReasoningPart(text="Call the tool.", signature="sig=="),
        ReasoningPart(redacted="EmwKAhgBEgy"),
        ToolCallPart("toolu_01A", "get_weather", '{"city":"Paris"}'),
    ]
    assert results.parts == [
        ToolResultPart("toolu_01A", [TextPart("21 C")]),
        TextPart("And tomorrow?"),
    ]
    assert req.tools[0].parameters["properties"] == {"city": {"type": "string"}}
    assert req.tools[0].cache_control == {"type": "ephemeral"}
    assert (req.tool_choice.mode, req.tool_choice.parallel) == ("required", False)  # type: ignore[union-attr]
    assert (req.max_output_tokens, req.temperature, req.top_p, req.top_k) == (1024, 0.5, 0.9, 40)
    assert req.stop == ["\n\nHuman:"]
    assert req.reasoning is not None and req.reasoning.budget_tokens == 2048
    assert req.user == "user-42" and req.stream


def test_encode_request_gives_back_an_equivalent_body() -> None:
    again = CODEC.encode_request(CODEC.decode_request(REQUEST), "claude-sonnet-4-5")
    expected = orjson.loads(orjson.dumps(REQUEST))
    expected["messages"][2]["content"][0].pop("is_error")  # false is the default
    assert again == expected


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": 3}, "model"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "system", "content": [{"type": "text"}]}]}, "messages.0"),
        ({"messages": [{"role": "system", "content": 7}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "audio"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "text"),
        ({"messages": [{"role": "user", "content": 5}]}, "content"),
        ({"system": [{"type": "image"}]}, "system"),
        ({"tools": [{"name": "f"}]}, "input_schema"),
        ({"tool_choice": {"type": "tool"}}, "name"),
        ({"thinking": {"type": "enabled"}}, "budget_tokens"),
        ({"stop_sequences": [1]}, "stop_sequences"),
        ({"top_k": "many"}, "top_k"),
    ],
)
def test_decode_refuses_what_the_reference_refuses(patch: dict[str, Any], says: str) -> None:
    body = {**REQUEST, **patch}
    with pytest.raises(ForebayError) as err:
        CODEC.decode_request(body)
    assert err.value.status == 400 and says in err.value.message


def test_a_mid_conversation_system_message_joins_the_system_prompt() -> None:
    """Claude Code sends one in its first request for a model it does not know."""
    body = {
        "model": "coder",
        "max_tokens": 10,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Read note.txt"},
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
            {"role": "system", "content": "Now in French."},
            {"role": "system", "content": [{"type": "tool_removal", "tool_names": ["Bash"]}]},
            {"role": "assistant", "content": "D'accord."},
        ],
    }
    req = CODEC.decode_request(body)
    assert [p.text for p in req.system] == ["Be brief.", "# Environment", "Now in French."]
    assert [m.role for m in req.messages] == ["user", "assistant"]


def test_server_tool_blocks_are_accepted_and_left_out_of_translation() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"},
                    {"type": "text", "text": "Found it."},
                ],
            }
        ],
    }
    req = CODEC.decode_request(body)
    assert req.tools == [] and req.messages[0].parts == [TextPart("Found it.")]
    assert CODEC.encode_request(req, "m")["tools"] == body["tools"]  # same family: kept


def test_a_server_tool_is_droppable_unless_tool_choice_forces_it() -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    fetch = {"type": "web_fetch_20250910", "name": "web_fetch"}
    fn = {"name": "f", "input_schema": {"type": "object"}}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    offered = CODEC.decode_request({**body, "tools": [fn, search]}).extras["anthropic_messages"]
    assert offered["droppable"] == [
        {"name": "web_search", "where": "tools.1 (web_search_20250305 tool)"}
    ]
    assert "native_only" not in offered and offered["server_tools"] == [search]
    named = CODEC.decode_request(
        {**body, "tools": [search, fetch], "tool_choice": {"type": "tool", "name": "web_fetch"}}
    ).extras["anthropic_messages"]
    assert named["native_only"] == ["tools.1 (web_fetch_20250910 tool)"]
    assert [d["name"] for d in named["droppable"]] == ["web_search"]
    alone = CODEC.decode_request({**body, "tools": [search], "tool_choice": {"type": "any"}})
    assert alone.extras["anthropic_messages"]["native_only"] == [
        "tools.0 (web_search_20250305 tool)"
    ]


# -- replies ---------------------------------------------------------------------


REPLY = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": "I'll check."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "output_tokens": 30,
    },
}


def test_decode_reply_counts_cache_tokens_as_input() -> None:
    reply = CODEC.decode_reply(REPLY)
    assert reply.parts == [
        TextPart("I'll check."),
        ToolCallPart("toolu_01A", "get_weather", '{"city":"Paris"}'),
    ]
    assert reply.stop == StopReason(Stop.TOOL_CALLS, "tool_use")
    assert reply.usage == Usage(
        input_tokens=170, output_tokens=30, cache_read_tokens=100, cache_write_tokens=20
    )
    assert CODEC.encode_reply(reply) == REPLY  # and back, exactly


def test_decode_reply_of_a_non_message_is_a_protocol_failure() -> None:
    with pytest.raises(UpstreamFailure) as err:
        CODEC.decode_reply({"choices": []})
    assert err.value.kind == "protocol"


@pytest.mark.parametrize(
    ("stop", "reason", "sequence"),
    [
        (StopReason(Stop.END), "end_turn", None),
        (StopReason(Stop.MAX_TOKENS), "max_tokens", None),
        (StopReason(Stop.STOP_SEQUENCE, "stop", "###"), "stop_sequence", "###"),
        (StopReason(Stop.TOOL_CALLS), "tool_use", None),
        (StopReason(Stop.PAUSE), "pause_turn", None),
        (StopReason(Stop.REFUSAL), "refusal", None),
        (StopReason(Stop.CONTENT_FILTER, "content_filter"), "refusal", None),
        (StopReason(Stop.CONTEXT_WINDOW), "model_context_window_exceeded", None),
    ],
)
def test_stop_reasons_are_not_collapsed(
    stop: StopReason, reason: str, sequence: str | None
) -> None:
    body = CODEC.encode_reply(GenReply("x", "m", [], stop, None))
    assert (body["stop_reason"], body["stop_sequence"]) == (reason, sequence)
    back = CODEC.decode_reply(body).stop
    assert back.kind is (Stop.REFUSAL if stop.kind is Stop.CONTENT_FILTER else stop.kind)


# -- streams ---------------------------------------------------------------------

# The reference's tool-use stream, with a thinking block and prompt caching.
STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Need the tool."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAh"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" \\"Paris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""

EVENTS: list[StreamEvent] = [
    StreamStart(
        "msg_014p7gG3wDgGV9EUtLvnow3U",
        "claude-sonnet-4-5",
        Usage(input_tokens=572, output_tokens=2, cache_read_tokens=100),
    ),
    PartStart(0, "reasoning"),
    ReasoningDelta(0, "Need the tool."),
    ReasoningDelta(0, signature="EqQBCgIYAh"),
    PartStop(0),
    PartStart(1, "text"),
    TextDelta(1, "Okay"),
    PartStop(1),
    PartStart(2, "tool_call", "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
    ToolArgsDelta(2, ""),
    ToolArgsDelta(2, '{"location":'),
    ToolArgsDelta(2, ' "Paris"}'),
    PartStop(2),
    StreamEnd(
        StopReason(Stop.TOOL_CALLS, "tool_use"),
        Usage(input_tokens=572, output_tokens=89, cache_read_tokens=100),
    ),
]


@pytest.mark.parametrize("step", [len(STREAM), 1, 7, 64])
def test_stream_decoder_reads_the_reference_stream(step: int) -> None:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    for i in range(0, len(STREAM), step):
        events += decoder.feed(STREAM[i : i + step])
    assert events + decoder.close() == EVENTS


def test_stream_encoder_writes_the_reference_stream() -> None:
    encoder = CODEC.stream_encoder(include_usage=False)
    out = b"".join(encoder.encode(e) for e in EVENTS)
    # What the encoder writes differs from the reference only where the
    # reference leaves a choice: where the ping goes (once, right after
    # message_start), every usage field in full, key order.
    assert out.count(b"event: ping\n") == 1
    assert out.split(b"\n\n")[1] == b'event: ping\ndata: {"type":"ping"}'

    def frames_of(raw: bytes) -> list[bytes]:
        return [f for f in raw.strip().split(b"\n\n") if not f.startswith(b"event: ping")]

    frames = [orjson.loads(f.split(b"\ndata: ")[1]) for f in frames_of(out)]
    wanted = [orjson.loads(f.split(b"\ndata: ")[1]) for f in frames_of(STREAM)]
    names = [f.split(b"\n")[0] for f in frames_of(out)]
    assert names == [f.split(b"\n")[0] for f in frames_of(STREAM)]
    assert all(n.decode()[7:] == f["type"] for n, f in zip(names, frames, strict=True))
    start, wanted_start = frames[0]["message"], wanted[0]["message"]
    assert start["usage"] == {
        "input_tokens": 472,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
        "output_tokens": 2,
    }
    assert {k: v for k, v in start.items() if k != "usage"} == {
        k: v for k, v in wanted_start.items() if k != "usage"
    }
    assert frames[1:-2] == wanted[1:-2]
    assert frames[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 472,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 100,
            "output_tokens": 89,
        },
    }
    assert frames[-1] == {"type": "message_stop"}


def test_stream_error_event_ends_the_stream() -> None:
    decoder = CODEC.stream_decoder()
    events = decoder.feed(
        STREAM.split(b"event: content_block_stop")[0]
        + b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\n\n' + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert events[-1] == StreamError("Overloaded", type="overloaded_error", status=529)
    assert decoder.close() == []
    encoded = CODEC.stream_encoder(include_usage=False).encode(events[-1])
    assert encoded == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )


@pytest.mark.parametrize(
    "cut",
    [
        b'event: content_block_delta\ndata: {"type":"content_block_delta","ind',
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n',
        b"",
    ],
)
def test_stream_cut_short_is_an_error(cut: bytes) -> None:
    decoder = CODEC.stream_decoder()
    head = STREAM.split(b"event: content_block_start")[0]
    events = decoder.feed(head + cut)
    assert not any(isinstance(e, StreamError) for e in events)
    closing = decoder.close()
    assert len(closing) == 1 and isinstance(closing[0], StreamError)


def test_garbled_event_is_an_error() -> None:
    events = CODEC.stream_decoder().feed(b"event: message_start\ndata: <html>\n\n")
    assert isinstance(events[0], StreamError)


def test_registry_has_a_codec_for_every_protocol() -> None:
    for protocol in WireProtocol:
        assert codec_for(protocol).name == protocol.value
