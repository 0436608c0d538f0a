# ruff: noqa: E501 (golden transcripts read best one event a line)
"""The Responses codec against golden transcripts, checked by the real openai
SDK's own types and stream parser: what Forebay encodes must parse into the
SDK's typed objects (no unknown-type fallbacks), and what OpenAI sends must
decode into the canonical events it means."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseItem
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
from openai.types.responses.response_stream_event import ResponseStreamEvent
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from forebay.errors import ForebayError, UpstreamFailure
from forebay.gateway.translate import check_translatable
from forebay.protocols.canonical import (
    FilePart,
    GenReply,
    ImagePart,
    Message,
    OutputFormat,
    PartStart,
    PartStop,
    Reasoning,
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
    Tool,
    ToolArgsDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)
from forebay.protocols.openai_responses import (
    CODEC,
    encode_request,
    request_from,
)
from forebay.protocols.openai_responses_items import decode_input
from forebay.protocols.openai_responses_reply import ResponseContext, echo_of
from forebay.protocols.openai_responses_state import history, listed, record_of
from forebay.upstreams.base import WireProtocol
from tests.support.servers import ServerThread

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ITEMS: TypeAdapter[Any] = TypeAdapter(list[ResponseItem])
CREATE: TypeAdapter[Any] = TypeAdapter(ResponseCreateParamsNonStreaming)

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}

REQUEST: dict[str, Any] = {
    "model": "echo",
    "instructions": "Answer briefly.",
    "input": [
        {"role": "developer", "content": "Use metric units."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather in Oslo? See the chart."},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0", "detail": "low"},
                {"type": "input_image", "file_id": "file-img1", "detail": "auto"},
                {"type": "input_file", "file_id": "file-pdf1"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
            ],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Need the weather tool."}],
            "encrypted_content": "gAAAA-opaque",
        },
        {
            "type": "message",
            "id": "msg_prev",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temp_c": 4}'},
        {"role": "user", "content": "And in Bergen?"},
    ],
    "tools": [
        {"type": "function", "name": "weather", "description": "Current weather",
         "parameters": WEATHER, "strict": True},
    ],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": WEATHER, "strict": True}},
    "max_output_tokens": 256,
    "temperature": 0.5,
    "top_p": 0.9,
    "reasoning": {"effort": "low", "summary": "auto"},
    "metadata": {"ticket": "42"},
    "safety_identifier": "user-7",
    "store": True,
    "truncation": "auto",
    "stream": False,
}  # fmt: skip


def test_request_is_spec_valid_and_decodes_to_its_canonical_form() -> None:
    CREATE.validate_python(REQUEST)  # the golden request is one the SDK would send
    req = CODEC.decode_request(copy.deepcopy(REQUEST))
    assert req.system == [TextPart("Answer briefly."), TextPart("Use metric units.")]
    assert req.messages == [
        Message(
            "user",
            [
                TextPart("Weather in Oslo? See the chart."),
                ImagePart(data="iVBORw0", media_type="image/png", detail="low"),
                ImagePart(file_id="file-img1", detail="auto"),
                FilePart(file_id="file-pdf1"),
                FilePart(data="JVBE", media_type="application/pdf", filename="a.pdf"),
            ],
        ),
        Message(
            "assistant",
            [
                ReasoningPart("Need the weather tool.", redacted="gAAAA-opaque", id="rs_1"),
                TextPart("Checking."),
                ToolCallPart("call_1", "weather", '{"city":"Oslo"}'),
            ],
        ),
        Message("tool", [ToolResultPart("call_1", [TextPart('{"temp_c": 4}')])]),
        Message("user", [TextPart("And in Bergen?")]),
    ]
    assert req.tools == [Tool("weather", "Current weather", WEATHER, True)]
    assert req.tool_choice == ToolChoice("required", parallel=False)
    assert req.output == OutputFormat("json_schema", "answer", WEATHER, True)
    assert (req.max_output_tokens, req.temperature, req.top_p) == (256, 0.5, 0.9)
    assert req.reasoning == Reasoning(effort="low", summary="auto")
    assert req.metadata == {"ticket": "42"} and req.user == "user-7" and not req.stream
    assert req.extras == {
        "openai_responses": {"fields": {"safety_identifier": "user-7", "truncation": "auto"}}
    }
    check_translatable(
        req, WireProtocol.OPENAI_RESPONSES
    )  # function tools only: any upstream can serve it


def test_a_string_input_is_one_user_message() -> None:
    req = CODEC.decode_request({"model": "m", "input": "hi"})
    assert req.messages == [Message("user", [TextPart("hi")])] and req.system == []


def test_encode_request_for_a_native_upstream_round_trips() -> None:
    req = CODEC.decode_request(copy.deepcopy(REQUEST))
    body = encode_request(req, "gpt-5")
    CREATE.validate_python(body)
    assert body["model"] == "gpt-5" and body["store"] is False
    assert "previous_response_id" not in body
    assert body["instructions"] == "Answer briefly.\n\nUse metric units."
    assert body["truncation"] == "auto" and body["safety_identifier"] == "user-7"
    assert body["text"]["format"] == {
        "type": "json_schema", "name": "answer", "schema": WEATHER, "strict": True,
    }  # fmt: skip
    again = CODEC.decode_request(body)
    assert again.messages == req.messages and again.tools == req.tools
    assert again.tool_choice == req.tool_choice and again.output == req.output


def test_foreign_reasoning_is_not_sent_to_a_responses_upstream() -> None:
    req = CODEC.decode_request({"model": "m", "input": "q"})
    req.messages.append(
        Message("assistant", [ReasoningPart("thinking", signature="anthropic-sig")])
    )
    assert [i["type"] for i in encode_request(req, "m")["input"]] == ["message"]
    req.stop = ["\n\n"]
    with pytest.raises(ForebayError) as err:
        encode_request(req, "m")
    assert err.value.status == 400 and err.value.param == "stop"


REPLY = GenReply(
    id="chatcmpl-1",
    model="upstream-model",
    parts=[
        ReasoningPart("Looked it up.", redacted="enc-1", id="rs_up"),
        TextPart("Bergen is 6 °C."),
        ToolCallPart("call_9", "weather", '{"city":"Bergen"}'),
    ],
    stop=StopReason(Stop.TOOL_CALLS, raw="tool_calls"),
    usage=Usage(input_tokens=120, output_tokens=30, cache_read_tokens=100, reasoning_tokens=12),
    created=1_700_000_000,
)


def _strip_ids(obj: Any) -> Any:
    """Minted ids are random: compare them by shape."""
    text = orjson.dumps(obj).decode()
    return orjson.loads(re.sub(r'"(msg|fc|rs)_[0-9a-f]{48}"', r'"\1_X"', text))


def test_reply_encodes_to_a_response_the_sdk_parses() -> None:
    ctx = ResponseContext(
        id="resp_1", created_at=1_700_000_001, model="echo", echo=echo_of(REQUEST)
    )
    body = CODEC.encode_reply(REPLY, ctx)
    parsed = Response.model_validate(body)
    assert parsed.output_text == "Bergen is 6 °C." and parsed.status == "completed"
    assert [type(o).__name__ for o in parsed.output] == [
        "ResponseReasoningItem", "ResponseOutputMessage", "ResponseFunctionToolCall",
    ]  # fmt: skip
    assert parsed.usage is not None and parsed.usage.input_tokens_details.cached_tokens == 100
    assert _strip_ids(body["output"]) == [
        {"id": "rs_up", "type": "reasoning", "encrypted_content": "enc-1",
         "summary": [{"type": "summary_text", "text": "Looked it up."}]},
        {"id": "msg_X", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Bergen is 6 °C.", "annotations": []}]},
        {"id": "fc_X", "type": "function_call", "status": "completed", "call_id": "call_9",
         "name": "weather", "arguments": '{"city":"Bergen"}'},
    ]  # fmt: skip
    assert body["usage"] == {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 150,
    }
    assert (body["id"], body["model"], body["tool_choice"], body["metadata"]) == (
        "resp_1", "echo", "required", {"ticket": "42"},
    )  # fmt: skip
    assert "output_text" not in body  # a client-side convenience
    back = CODEC.decode_reply(body)
    assert back.parts == REPLY.parts and back.usage == REPLY.usage
    assert back.stop.kind is Stop.TOOL_CALLS


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [
        (Stop.MAX_TOKENS, "incomplete", "max_output_tokens"),
        (Stop.CONTENT_FILTER, "incomplete", "content_filter"),
        (Stop.END, "completed", None),
    ],
)
def test_stop_reasons_are_never_collapsed(stop: Stop, status: str, reason: str | None) -> None:
    reply = GenReply("x", "m", [TextPart("cut")], StopReason(stop), Usage(1, 1))
    parsed = Response.model_validate(CODEC.encode_reply(reply))
    assert parsed.status == status
    assert (parsed.incomplete_details.reason if parsed.incomplete_details else None) == reason
    assert CODEC.decode_reply(parsed.model_dump()).stop.kind is stop


STREAM = [
    StreamStart("chatcmpl-2", "upstream-model"),
    PartStart(0, "text"),
    TextDelta(0, "Let me "),
    TextDelta(0, "check."),
    PartStop(0),
    PartStart(1, "tool_call", tool_call_id="call_7", tool_name="weather"),
    ToolArgsDelta(1, '{"city":'),
    ToolArgsDelta(1, '"Bergen"}'),
    PartStop(1),
    StreamEnd(
        StopReason(Stop.TOOL_CALLS), Usage(input_tokens=50, output_tokens=9, cache_read_tokens=8)
    ),
]
STREAM_TYPES = [
    "response.created", "response.in_progress",
    "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.output_item.added",
    "response.function_call_arguments.delta", "response.function_call_arguments.delta",
    "response.function_call_arguments.done", "response.output_item.done",
    "response.completed",
]  # fmt: skip


def sse_events(raw: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    for block in raw.decode().split("\n\n"):
        if block:
            head, data = block.split("\n", 1)
            yield head.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))


def test_stream_encodes_the_official_event_sequence() -> None:
    ctx = ResponseContext(id="resp_s", model="echo")
    encoder = CODEC.stream_encoder(include_usage=False, ctx=ctx)
    raw = b"".join(encoder.encode(e) for e in STREAM)
    state = ResponseStreamState(input_tools=[], text_format=openai.omit)
    events = []
    for name, data in sse_events(raw):
        assert name == data["type"]
        event = EVENTS.validate_python(data)  # a typed event, never a fallback
        assert type(event).__name__.startswith("Response")
        state.handle_event(event)
        events.append(event)
    assert [e.type for e in events] == STREAM_TYPES
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.id == "resp_s" and final.model == "echo" and final.output_text == "Let me check."
    call = final.output[1]
    assert (call.call_id, call.name, call.arguments) == ("call_7", "weather", '{"city":"Bergen"}')
    assert final.usage is not None and final.usage.total_tokens == 59
    assert final.usage.input_tokens_details.cached_tokens == 8
    assert encoder.response == final.model_dump(exclude_unset=True)
    assert encoder.encode(StreamEnd(StopReason(Stop.END), None)) == b""  # ended


def test_the_sdk_client_streams_from_an_encoded_stream_on_loopback() -> None:
    def app_for(raw: bytes) -> Starlette:
        async def create(request: Request) -> HttpResponse:
            return HttpResponse(raw, media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/responses", create, methods=["POST"])])

    encoder = CODEC.stream_encoder(include_usage=True, ctx=ResponseContext(model="echo"))
    raw = b"".join(encoder.encode(e) for e in STREAM)
    with (
        ServerThread(app_for(raw)) as server,
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="k") as client,
        client.responses.stream(model="echo", input="weather?") as stream,
    ):
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Let me ", "check."] and final.output_text == "Let me check."
    assert final.usage is not None and final.usage.output_tokens == 9


def test_a_stream_error_becomes_an_error_event_and_a_failed_response() -> None:
    encoder = CODEC.stream_encoder(include_usage=True)
    raw = b"".join(
        encoder.encode(e)
        for e in [
            StreamStart("x", "m"),
            PartStart(0, "text"),
            TextDelta(0, "par"),
            StreamError("upstream died"),
        ]
    )
    events = [EVENTS.validate_python(d) for _, d in sse_events(raw)]
    assert [e.type for e in events][-3:] == [
        "response.output_text.delta",
        "error",
        "response.failed",
    ]
    assert events[-2].message == "upstream died"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.output_text == "par"
    assert failed.output[0].status == "incomplete"
    assert encoder.encode(TextDelta(0, "more")) == b""  # nothing after the end


def test_an_error_before_the_stream_started_is_one_error_event() -> None:
    encoder = CODEC.stream_encoder(include_usage=True)
    raw = encoder.encode(StreamError("no upstream", status=503))
    (event,) = [EVENTS.validate_python(d) for _, d in sse_events(raw)]
    assert event.type == "error" and event.message == "no upstream" and event.sequence_number == 0
    assert encoder.encode(StreamStart("x", "m")) == b"" and encoder.response is None


# A stream as OpenAI sends it (shape recorded from the API: event lines, obfuscation
# fields, reasoning with encrypted content, text, a function call, usage at the end).
RESP = {
    "id": "resp_up", "object": "response", "created_at": 1741290958, "status": "in_progress",
    "background": False, "error": None, "incomplete_details": None, "instructions": None,
    "max_output_tokens": None, "model": "o4-mini-2025-04-16", "output": [],
    "parallel_tool_calls": True, "previous_response_id": None,
    "reasoning": {"effort": "low", "summary": "auto"}, "store": False, "temperature": 1.0,
    "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
    "truncation": "disabled", "usage": None, "user": None, "metadata": {},
}  # fmt: skip
RS = {"id": "rs_up", "type": "reasoning", "summary": []}
MSG = {
    "id": "msg_up",
    "type": "message",
    "status": "in_progress",
    "role": "assistant",
    "content": [],
}
FC = {"id": "fc_up", "type": "function_call", "status": "in_progress", "arguments": "",
      "call_id": "call_up", "name": "weather"}  # fmt: skip
TEXT_PART = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
DONE_RESP = {
    **RESP,
    "status": "completed",
    "usage": {
        "input_tokens": 75, "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
        "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 115,
    },
}  # fmt: skip
RECORDED = [
    {"type": "response.created", "response": RESP},
    {"type": "response.in_progress", "response": RESP},
    {"type": "response.output_item.added", "output_index": 0, "item": RS},
    {"type": "response.reasoning_summary_part.added", "item_id": "rs_up", "output_index": 0,
     "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
    {"type": "response.reasoning_summary_text.delta", "item_id": "rs_up", "output_index": 0,
     "summary_index": 0, "delta": "Think", "obfuscation": "x1"},
    {"type": "response.reasoning_summary_text.delta", "item_id": "rs_up", "output_index": 0,
     "summary_index": 1, "delta": "More", "obfuscation": "x2"},
    {"type": "response.output_item.done", "output_index": 0,
     "item": {**RS, "encrypted_content": "gAAA-enc", "summary": [{"type": "summary_text", "text": "Think"}]}},
    {"type": "response.output_item.added", "output_index": 1, "item": MSG},
    {"type": "response.content_part.added", "item_id": "msg_up", "output_index": 1,
     "content_index": 0, "part": TEXT_PART},
    {"type": "response.output_text.delta", "item_id": "msg_up", "output_index": 1,
     "content_index": 0, "delta": "Hi", "logprobs": [], "obfuscation": "ab"},
    {"type": "response.output_text.done", "item_id": "msg_up", "output_index": 1,
     "content_index": 0, "text": "Hi", "logprobs": []},
    {"type": "response.content_part.done", "item_id": "msg_up", "output_index": 1,
     "content_index": 0, "part": {**TEXT_PART, "text": "Hi"}},
    {"type": "response.output_item.done", "output_index": 1, "item": {**MSG, "status": "completed"}},
    {"type": "response.output_item.added", "output_index": 2, "item": FC},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_up", "output_index": 2,
     "delta": '{"city":', "obfuscation": "q"},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_up", "output_index": 2,
     "delta": '"Oslo"}', "obfuscation": "r"},
    {"type": "response.function_call_arguments.done", "item_id": "fc_up", "output_index": 2,
     "name": "weather", "arguments": '{"city":"Oslo"}'},
    {"type": "response.output_item.done", "output_index": 2,
     "item": {**FC, "status": "completed", "arguments": '{"city":"Oslo"}'}},
    {"type": "response.completed", "response": DONE_RESP},
]  # fmt: skip
RECORDED_BYTES = b"".join(
    b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps({**e, "sequence_number": n}))
    for n, e in enumerate(RECORDED)
)
DECODED: list[StreamEvent] = [
    StreamStart("resp_up", "o4-mini-2025-04-16"),
    PartStart(0, "reasoning", item_id="rs_up"),
    ReasoningDelta(0, "Think"),
    ReasoningDelta(0, "\n\nMore"),
    ReasoningDelta(0, redacted="gAAA-enc"),
    PartStop(0),
    PartStart(1, "text"),
    TextDelta(1, "Hi"),
    PartStop(1),
    PartStart(2, "tool_call", tool_call_id="call_up", tool_name="weather", item_id="fc_up"),
    ToolArgsDelta(2, '{"city":'),
    ToolArgsDelta(2, '"Oslo"}'),
    PartStop(2),
    StreamEnd(
        StopReason(Stop.TOOL_CALLS, raw="completed"),
        Usage(input_tokens=75, output_tokens=40, cache_read_tokens=64, reasoning_tokens=20),
    ),
]


def test_the_recorded_stream_is_one_the_sdk_accepts() -> None:
    state = ResponseStreamState(input_tools=[], text_format=openai.omit)
    for _, data in sse_events(RECORDED_BYTES):
        state.handle_event(EVENTS.validate_python(data))


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_decoder_reads_a_recorded_openai_stream_in_any_chunking(size: int) -> None:
    decoder = CODEC.stream_decoder()
    got: list[StreamEvent] = []
    raw = RECORDED_BYTES.replace(b"\n", b"\r\n") if size == 7 else RECORDED_BYTES
    for i in range(0, len(raw), size):
        got += decoder.feed(raw[i : i + size])
    got += decoder.close()
    assert got == DECODED


def test_decoded_then_encoded_is_the_same_conversation() -> None:
    decoder, encoder = CODEC.stream_decoder(), CODEC.stream_encoder(include_usage=True)
    raw = b"".join(encoder.encode(e) for e in decoder.feed(RECORDED_BYTES) + decoder.close())
    final = [d for _, d in sse_events(raw)][-1]["response"]
    parsed = Response.model_validate(final)
    assert parsed.output[0].id == "rs_up" and parsed.output[0].encrypted_content == "gAAA-enc"
    assert parsed.output_text == "Hi" and parsed.usage is not None
    assert parsed.usage.output_tokens_details.reasoning_tokens == 20


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (RECORDED_BYTES[: len(RECORDED_BYTES) // 2], "ended before response.completed"),
        (b"event: response.created\ndata: {not json\n\n", "not JSON"),
        (
            b'data: {"type":"response.output_text.delta","output_index":0}\n\n',
            "before response.created",
        ),
        (
            RECORDED_BYTES.split(b"\n\n")[0]
            + b'\n\ndata: {"type":"response.output_text.delta","output_index":5,'
            b'"content_index":0,"delta":"x"}\n\n',
            "malformed",
        ),
        (
            b'event: error\ndata: {"type":"error","code":"server_error","message":"boom"}\n\n',
            "boom",
        ),
        (
            RECORDED_BYTES.split(b"\n\n")[0]
            + b'\n\ndata: {"type":"response.failed","response":{"status":"failed",'
            b'"error":{"code":"server_error","message":"model overloaded"}}}\n\n',
            "model overloaded",
        ),
    ],
)
def test_a_broken_upstream_stream_ends_in_one_stream_error(raw: bytes, why: str) -> None:
    decoder = CODEC.stream_decoder()
    got = decoder.feed(raw) + decoder.close()
    errors = [e for e in got if isinstance(e, StreamError)]
    assert len(errors) == 1 and got[-1] is errors[0] and why in errors[0].message
    assert decoder.feed(RECORDED_BYTES) == []  # nothing after the end


def test_a_garbled_reply_body_is_an_upstream_failure() -> None:
    for body in ({"object": "response"}, {"id": "r", "output": [{"type": "function_call"}]}):
        with pytest.raises(UpstreamFailure):
            CODEC.decode_reply(body)


# ---------------------------------------------------------------- abuse


def deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_video"}]}]}, "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0]"),
        ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
         "input[0].content"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]}, "input[0].output"),
        ({"input": [{"type": "teleport"}]}, "input[0].type"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"tools": [{"type": "function", "name": "f", "parameters": deep(100)}]}, "tools[0].parameters"),
        ({"text": {"format": {"type": "json_schema", "name": "a", "schema": deep(100)}}},
         "text.format.schema"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"tool_choice": 7}, "tool_choice"),
        ({"max_output_tokens": 8}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"background": True}, "background"),
        ({"model": ""}, "model"),
    ],
)  # fmt: skip
def test_malformed_requests_are_a_clear_400(change: dict[str, Any], param: str) -> None:
    body = {"model": "m", "input": "hi", **change}
    with pytest.raises(ForebayError) as err:
        CODEC.decode_request(body)
    assert err.value.status == 400 and err.value.param == param, err.value.message
    assert err.value.message.endswith(".")


def test_a_hosted_tool_is_kept_for_a_native_upstream_and_refused_for_others() -> None:
    body = {
        "model": "m",
        "input": "news?",
        "tools": [{"type": "web_search", "search_context_size": "low"}],
        "tool_choice": {"type": "web_search"},
        "include": ["web_search_call.action.sources"],
    }
    req = CODEC.decode_request(body)
    native = encode_request(req, "gpt-5")
    assert native["tools"] == body["tools"] and native["tool_choice"] == {"type": "web_search"}
    assert native["include"] == body["include"]
    with pytest.raises(ForebayError) as err:
        check_translatable(req, WireProtocol.OPENAI_RESPONSES)
    assert err.value.status == 400
    assert "tools[0] (web_search tool)" in err.value.message and "natively" in err.value.message


def test_an_unforced_hosted_tool_is_droppable_and_a_forced_one_native_only() -> None:
    fn = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    offered = CODEC.decode_request({"model": "m", "input": "x", "tools": [fn, {"type": "mcp"}]})
    kept = offered.extras["openai_responses"]
    assert kept["droppable"] == [{"name": "mcp", "where": "tools[1] (mcp tool)"}]
    assert "native_only" not in kept
    # Not dropped by anyone: still refused when it would cross (gateway/hosted.py drops).
    with pytest.raises(ForebayError):
        check_translatable(offered, WireProtocol.OPENAI_RESPONSES)
    # `required` can still be met by the function; with nothing else to call it forces.
    body = {"model": "m", "input": "x", "tool_choice": "required"}
    assert (
        "droppable"
        in CODEC.decode_request({**body, "tools": [fn, {"type": "mcp"}]}).extras["openai_responses"]
    )
    forced = CODEC.decode_request({**body, "tools": [{"type": "mcp"}]}).extras["openai_responses"]
    assert forced["native_only"] == ["tools[0] (mcp tool)"] and "droppable" not in forced


# ---------------------------------------------------------------- stored state


def test_a_stored_response_lists_its_items_and_continues_the_conversation() -> None:
    items = decode_input(REQUEST["input"])
    body = CODEC.encode_reply(REPLY, ResponseContext(model="echo", echo=echo_of(REQUEST)))
    record = record_of(body, tenant_id="ten_a", input_items=items, expires_at=2e9)
    assert [o["id"] for o in record.output] == [o["id"] for o in body["output"]]
    stored = orjson.loads(orjson.dumps(record.input))  # as it comes back from the database
    page = listed(record.id, stored)
    parsed = ITEMS.validate_python(page)
    assert [type(p).__name__ for p in parsed] == [
        "ResponseInputMessageItem", "ResponseInputMessageItem", "ResponseReasoningItem",
        "ResponseOutputMessage", "ResponseFunctionToolCallItem",
        "ResponseFunctionToolCallOutputItem", "ResponseInputMessageItem",
    ]  # fmt: skip
    assert parsed[3].id == "msg_prev" and parsed[2].id == "rs_1"
    assert len({p.id for p in parsed}) == len(parsed)  # every item has its own id
    follow = {"model": "echo", "input": "Thanks!", "previous_response_id": record.id}
    again = dataclasses.replace(record, input=stored)
    req = request_from(follow, decode_input("Thanks!"), history([again]))
    first = CODEC.decode_request(copy.deepcopy(REQUEST))
    assert req.system == [TextPart("Use metric units.")]  # instructions are not carried over
    assert req.messages[: len(first.messages)] == first.messages
    assert req.messages[len(first.messages)].parts == REPLY.parts
    assert req.messages[-1] == Message("user", [TextPart("Thanks!")])


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (
            b'event: error\ndata: {"type":"error","code":"rate_limit_exceeded","message":"m"}\n\n',
            "rate_limit_exceeded",
        ),
        (
            RECORDED_BYTES.split(b"\n\n")[0]
            + b'\n\ndata: {"type":"response.failed","response":{"status":"failed",'
            b'"error":{"code":"server_error","message":"m"}}}\n\n',
            "server_error",
        ),
        (
            b'event: error\ndata: {"type":"error","code":null,"message":"m"}\n\n',
            "upstream_stream_error",
        ),
    ],
)
def test_a_stream_error_keeps_the_wires_error_code_as_its_type(raw: bytes, kind: str) -> None:
    """A Chat client of a Responses upstream sees OpenAI's own code, not a generic one."""
    decoder = CODEC.stream_decoder()
    (error,) = [e for e in decoder.feed(raw) + decoder.close() if isinstance(e, StreamError)]
    assert error.type == kind


def test_a_namespace_of_functions_is_offered_to_any_upstream_and_kept_whole_for_a_native_one() -> (
    None
):
    """Codex groups its sub-agent tools in a `namespace` tool: its functions are
    ordinary tools for a Chat or Messages upstream, and a Responses upstream
    gets the namespace back as sent (not its functions twice)."""
    spawn = {"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}
    group = {"type": "namespace", "name": "agents", "description": "sub-agents", "tools": [spawn]}
    shell = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
    req = CODEC.decode_request({"model": "m", "input": "hi", "tools": [shell, group]})
    check_translatable(
        req, WireProtocol.OPENAI_RESPONSES
    )  # no 400: nothing in it needs a native upstream
    assert [t.name for t in req.tools] == ["exec_command", "spawn_agent"]
    native = encode_request(req, "gpt-5")
    assert [t["name"] for t in native["tools"]] == ["exec_command", "agents"]
    assert native["tools"][1] == group


@pytest.mark.parametrize(
    "inner",
    [
        [{"type": "web_search"}],  # a hosted tool inside: only OpenAI can run it
        [{"type": "function", "name": "exec_command"}],  # clashes with a top-level function
    ],
)
def test_a_namespace_that_cannot_be_flattened_needs_a_native_upstream(inner: list[Any]) -> None:
    shell = {"type": "function", "name": "exec_command"}
    group = {"type": "namespace", "name": "agents", "tools": inner}
    req = CODEC.decode_request({"model": "m", "input": "hi", "tools": [shell, group]})
    assert [t.name for t in req.tools] == ["exec_command"]
    assert encode_request(req, "gpt-5")["tools"][1] == group
    with pytest.raises(ForebayError) as err:
        check_translatable(req, WireProtocol.OPENAI_RESPONSES)
    assert err.value.status == 400 and "tools[1] (namespace" in err.value.message


def test_a_malformed_function_inside_a_namespace_is_a_clear_400() -> None:
    group = {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "a b"}]}
    with pytest.raises(ForebayError) as err:
        CODEC.decode_request({"model": "m", "input": "hi", "tools": [group]})
    assert err.value.status == 400 and err.value.param == "tools[0].tools[0].name"
