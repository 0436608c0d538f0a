"""The client side of the protocol matrix (tests/gateway/test_protocol_matrix.py):
one `Inbound` per protocol a client may speak to Forebay, holding what the
matrix needs of it: the request bodies of each case, how to read an answer,
a tool call, a streamed text and a stream's error event out of the bytes,
and how the protocol's real SDK drives a tool round trip.

The Responses column is in matrix_responses.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import orjson

from forebay.protocols.sse import json_of, parse_frame

TOOL_NAME = "get_weather"
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "query": {"type": "string"}},
}
TOOL_QUESTION = "weather in Lima"
TOOL_RESULT = "sunny and warm"


def frames(raw: bytes) -> list[tuple[str | None, Any]]:
    """An SSE body as (event name, parsed data) pairs; `[DONE]` kept as a string."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        parsed = parse_frame(block)
        if parsed is None:
            continue  # a comment (a keep-alive)
        name, data = parsed
        event = name.decode() if name is not None else None
        out.append((event, "[DONE]" if data == b"[DONE]" else json_of(data)))
    return out


_RANDOM_ID = re.compile(rb"(?<![0-9a-f])([A-Za-z]+[-_])[0-9a-f]{24,}\b")
_STAMP = re.compile(rb'"(created|created_at|completed_at)":\s*\d+')


def normalise(raw: bytes) -> bytes:
    """The bytes a client saw, with what changes from run to run made constant:
    ids Forebay mints (a prefix and 24+ hex digits) and unix timestamps. Ids an
    upstream gave (call_test0001, toolu_01...) stay, so a lost one shows."""
    raw = _RANDOM_ID.sub(rb"\1<id>", raw)
    return _STAMP.sub(rb'"\1":<ts>', raw)


@dataclass(frozen=True)
class Inbound:
    name: str  # the ledger's `protocol` column
    path: str
    auth: Callable[[str], dict[str, str]]
    # (alias, system text, user text, stream) -> body
    ask: Callable[[str, str, str, bool], dict[str, Any]]
    # (alias, stream) -> the first turn of a tool round trip
    ask_tool: Callable[[str, bool], dict[str, Any]]
    text_of: Callable[[dict[str, Any]], str]  # a whole reply's text
    tool_call_of: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]  # (name, args)
    stream_text: Callable[[bytes], str]
    stream_tool_call: Callable[[bytes], tuple[str, dict[str, Any]]]
    # The stream's error event, as {"type": ..., "message": ...}, or an AssertionError.
    stream_error: Callable[[bytes], dict[str, Any]]
    # (base url, key, alias, stream) -> (the call's name and args, the answer to its result)
    sdk_round_trip: Callable[[str, str, str, bool], tuple[str, dict[str, Any], str]]
    # (base url, key, alias) -> the message of the error the SDK raises mid-stream
    sdk_stream_error: Callable[[str, str, str], str]


# ---------------------------------------------------------------- Chat Completions


def _chat_ask(alias: str, system: str, text: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": alias,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


_CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": TOOL_NAME, "parameters": TOOL_SCHEMA}}
]


def _chat_ask_tool(alias: str, stream: bool) -> dict[str, Any]:
    body = {
        "model": alias,
        "messages": [{"role": "user", "content": TOOL_QUESTION}],
        "tools": _CHAT_TOOLS,
    }
    return {**body, "stream": True} if stream else body


def _chat_text(reply: dict[str, Any]) -> str:
    return str(reply["choices"][0]["message"]["content"])


def _chat_tool_call(reply: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    (call,) = choice["message"]["tool_calls"]
    return call["function"]["name"], orjson.loads(call["function"]["arguments"])


def _chat_chunks(raw: bytes, *, done: bool = True) -> list[dict[str, Any]]:
    got = frames(raw)
    if got[-1] == (None, "[DONE]"):
        got.pop()
    else:
        assert not done, got[-1]
    return [data for _, data in got]


def _chat_stream_text(raw: bytes) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in _chat_chunks(raw) if c["choices"]
    )


def _chat_stream_tool_call(raw: bytes) -> tuple[str, dict[str, Any]]:
    name, args = "", ""
    finish = None
    for chunk in _chat_chunks(raw):
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                name += call.get("function", {}).get("name") or ""
                args += call.get("function", {}).get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    assert finish == "tool_calls", finish
    return name, orjson.loads(args)


def _chat_stream_error(raw: bytes) -> dict[str, Any]:
    # Forebay ends a translated stream with `data: [DONE]` after the error; a
    # Chat upstream's own error event is relayed as it came (vLLM sends none after).
    last = _chat_chunks(raw, done=False)[-1]
    assert "error" in last, last
    err = last["error"]
    return {"type": err.get("code") or err.get("type"), "message": err["message"]}


def _chat_sdk(url: str, key: str, alias: str, stream: bool) -> tuple[str, dict[str, Any], str]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        question: Any = {"role": "user", "content": TOOL_QUESTION}
        if stream:
            with client.chat.completions.stream(
                model=alias, messages=[question], tools=_CHAT_TOOLS
            ) as events:
                first: openai.types.chat.ChatCompletion = events.get_final_completion()
        else:
            first = client.chat.completions.create(
                model=alias, messages=[question], tools=_CHAT_TOOLS
            )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        (call,) = choice.message.tool_calls or []
        assert call.type == "function"
        second = client.chat.completions.create(
            model=alias,
            tools=_CHAT_TOOLS,
            messages=[
                question,
                choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
            ],
        )
        args = orjson.loads(call.function.arguments)
        return call.function.name, args, second.choices[0].message.content or ""


def _chat_sdk_error(url: str, key: str, alias: str) -> str:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        question: Any = {"role": "user", "content": "a b c"}
        try:
            for _ in client.chat.completions.create(model=alias, messages=[question], stream=True):
                pass
        except openai.APIError as exc:
            return exc.message
        raise AssertionError("the stream ended without an error")


CHAT = Inbound(
    name="openai_chat",
    path="/v1/chat/completions",
    auth=lambda key: {"authorization": f"Bearer {key}"},
    ask=_chat_ask,
    ask_tool=_chat_ask_tool,
    text_of=_chat_text,
    tool_call_of=_chat_tool_call,
    stream_text=_chat_stream_text,
    stream_tool_call=_chat_stream_tool_call,
    stream_error=_chat_stream_error,
    sdk_round_trip=_chat_sdk,
    sdk_stream_error=_chat_sdk_error,
)

# ---------------------------------------------------------------- Anthropic Messages

_MSG_TOOLS: list[Any] = [{"name": TOOL_NAME, "input_schema": TOOL_SCHEMA}]


def _messages_ask(alias: str, system: str, text: str, stream: bool) -> dict[str, Any]:
    # The system block ends a cacheable prefix: an Anthropic upstream writes it
    # to its cache on the first request and reads it on the next.
    body: dict[str, Any] = {
        "model": alias,
        "max_tokens": 64,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": text}],
    }
    return {**body, "stream": True} if stream else body


def _messages_ask_tool(alias: str, stream: bool) -> dict[str, Any]:
    body = {
        "model": alias,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": TOOL_QUESTION}],
        "tools": _MSG_TOOLS,
    }
    return {**body, "stream": True} if stream else body


def _messages_text(reply: dict[str, Any]) -> str:
    return "".join(b["text"] for b in reply["content"] if b["type"] == "text")


def _messages_tool_call(reply: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    assert reply["stop_reason"] == "tool_use", reply
    (use,) = [b for b in reply["content"] if b["type"] == "tool_use"]
    return use["name"], use["input"]


def _events(raw: bytes) -> list[tuple[str | None, Any]]:
    got = frames(raw)
    for name, data in got:
        assert name == data["type"], (name, data)  # Anthropic names every event
    return got


def _messages_stream_text(raw: bytes) -> str:
    got = _events(raw)
    assert got[-1][0] == "message_stop", got[-1]
    return "".join(
        d["delta"].get("text", "")
        for n, d in got
        if n == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )


def _messages_stream_tool_call(raw: bytes) -> tuple[str, dict[str, Any]]:
    got = _events(raw)
    assert got[-1][0] == "message_stop", got[-1]
    (stop,) = [d for n, d in got if n == "message_delta"]
    assert stop["delta"]["stop_reason"] == "tool_use", stop
    (start,) = [
        d for n, d in got if n == "content_block_start" and d["content_block"]["type"] == "tool_use"
    ]
    args = "".join(
        d["delta"]["partial_json"]
        for n, d in got
        if n == "content_block_delta" and d["index"] == start["index"]
    )
    return start["content_block"]["name"], orjson.loads(args)


def _messages_stream_error(raw: bytes) -> dict[str, Any]:
    name, data = _events(raw)[-1]
    assert name == "error", (name, data)
    return dict(data["error"])


def _messages_sdk(url: str, key: str, alias: str, stream: bool) -> tuple[str, dict[str, Any], str]:
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as client:
        question: Any = {"role": "user", "content": TOOL_QUESTION}
        if stream:
            with client.messages.stream(
                model=alias, max_tokens=64, messages=[question], tools=_MSG_TOOLS
            ) as events:
                first: anthropic.types.Message = events.get_final_message()
        else:
            first = client.messages.create(
                model=alias, max_tokens=64, messages=[question], tools=_MSG_TOOLS
            )
        assert first.stop_reason == "tool_use", first
        (use,) = [b for b in first.content if b.type == "tool_use"]
        said: Any = {"role": "assistant", "content": [b.model_dump() for b in first.content]}
        second = client.messages.create(
            model=alias,
            max_tokens=64,
            tools=_MSG_TOOLS,
            messages=[
                question,
                said,
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": TOOL_RESULT}
                    ],
                },
            ],
        )
        text = "".join(b.text for b in second.content if b.type == "text")
        return use.name, dict(use.input), text


def _messages_sdk_error(url: str, key: str, alias: str) -> str:
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as client:
        question: Any = {"role": "user", "content": "a b c"}
        try:
            with client.messages.stream(model=alias, max_tokens=64, messages=[question]) as events:
                for _ in events:
                    pass
        except anthropic.APIStatusError as exc:
            return exc.message
        raise AssertionError("the stream ended without an error")


MESSAGES = Inbound(
    name="anthropic_messages",
    path="/v1/messages",
    auth=lambda key: {"x-api-key": key, "anthropic-version": "2023-06-01"},
    ask=_messages_ask,
    ask_tool=_messages_ask_tool,
    text_of=_messages_text,
    tool_call_of=_messages_tool_call,
    stream_text=_messages_stream_text,
    stream_tool_call=_messages_stream_tool_call,
    stream_error=_messages_stream_error,
    sdk_round_trip=_messages_sdk,
    sdk_stream_error=_messages_sdk_error,
)

# The Responses column lives beside this module and imports its helpers from it.
from tests.support.matrix_responses import RESPONSES  # noqa: E402

INBOUND = (CHAT, MESSAGES, RESPONSES)
