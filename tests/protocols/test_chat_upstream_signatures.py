"""Reasoning signatures from an OpenAI-compatible Chat upstream (Gemini's own
compatibility endpoint, LiteLLM) reach Responses and Messages clients, and go
back to the upstream on the next turn where it wants them: Google's
`tool_calls[].extra_content.google.thought_signature` on the call it signed,
LiteLLM's `thinking_blocks` beside it. An upstream's garbled values are
dropped, never a failure of the reply."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forebay.protocols.anthropic_messages import CODEC as MESSAGES
from forebay.protocols.anthropic_stream import MessagesStreamEncoder
from forebay.protocols.canonical import (
    PartStart,
    ReasoningDelta,
    ReasoningPart,
    StreamError,
    StreamEvent,
    ToolCallPart,
)
from forebay.protocols.gemini_stream import GeminiStreamDecoder
from forebay.protocols.openai_chat import CODEC as CHAT
from forebay.protocols.openai_chat_stream import ChatStreamDecoder, ChatStreamEncoder
from forebay.protocols.openai_responses import CODEC as RESPONSES
from forebay.protocols.openai_responses_stream import ResponsesStreamEncoder
from forebay.protocols.values import MAX_OPAQUE
from tests.protocols.test_reasoning_signatures import GEMINI_REPLY, SIG_CALL, SIG_THOUGHT

SIG = "Q2lJQkRHOVNJR05oYkd3PQ=="
GOOGLE = {"google": {"thought_signature": SIG}}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
BLOCKS = [
    {"type": "thinking", "thinking": "Need the tool.", "signature": "YW50LXNpZw=="},
    {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
]


def _call(n: int, city: str, **extra: Any) -> dict[str, Any]:
    args = orjson.dumps({"city": city}).decode()
    fn = {"name": "weather", "arguments": args}
    return {"id": f"function-call-{n}", "type": "function", "function": fn, **extra}


def _reply(message: dict[str, Any]) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", **message},
        "finish_reason": "tool_calls",
    }
    usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    head = {"id": "c1", "object": "chat.completion", "created": 1, "model": "g"}
    return {**head, "choices": [choice], "usage": usage}


# Gemini's compatibility endpoint: parallel calls, the first one signed.
GEMINI_COMPAT = _reply(
    {"content": None, "tool_calls": [_call(1, "Paris", extra_content=GOOGLE), _call(2, "London")]}
)
# LiteLLM in front of Anthropic: readable thinking plus its signed blocks.
LITELLM = _reply(
    {
        "content": None,
        "reasoning_content": "Need the tool.",
        "thinking_blocks": BLOCKS,
        "tool_calls": [_call(1, "Oslo")],
    }
)


def _wire(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


def _assistant(body: dict[str, Any]) -> dict[str, Any]:
    [msg] = [m for m in body["messages"] if m["role"] == "assistant"]
    return msg


def _responses_next_turn(reply: dict[str, Any]) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris and London?"}]
    items += reply["output"]
    for o in reply["output"]:
        if o["type"] == "function_call":
            items.append({"type": "function_call_output", "call_id": o["call_id"], "output": "6C"})
    return _wire({"model": "m", "input": items, "tools": [{"type": "function", "name": "weather"}]})


def test_responses_client_gemini_compat_signature_goes_back_on_its_call() -> None:
    reply = _wire(RESPONSES.encode_reply(CHAT.decode_reply(GEMINI_COMPAT)))
    kinds = [o["type"] for o in reply["output"]]
    assert kinds == ["reasoning", "function_call", "function_call"]
    assert reply["output"][0]["encrypted_content"] == SIG
    body = CHAT.encode_request(RESPONSES.decode_request(_responses_next_turn(reply)), "g")
    msg = _assistant(body)
    first, second = msg["tool_calls"]
    assert first["id"] == "function-call-1" and first["extra_content"] == GOOGLE
    assert "extra_content" not in second  # Gemini signs only the first parallel call
    assert "thinking_blocks" not in msg and "reasoning_content" not in msg


def _messages_next_turn(content: list[dict[str, Any]]) -> dict[str, Any]:
    results = [
        {"type": "tool_result", "tool_use_id": b["id"], "content": "6C"}
        for b in content
        if b["type"] == "tool_use"
    ]
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": results},
    ]
    return _wire({"model": "m", "max_tokens": 64, "messages": messages})


def test_messages_client_litellm_thinking_blocks_go_back_verbatim() -> None:
    reply = _wire(MESSAGES.encode_reply(CHAT.decode_reply(LITELLM)))
    assert [b["type"] for b in reply["content"]] == ["thinking", "redacted_thinking", "tool_use"]
    assert reply["content"][0]["signature"] == "YW50LXNpZw=="
    body = CHAT.encode_request(MESSAGES.decode_request(_messages_next_turn(reply["content"])), "m")
    msg = _assistant(body)
    assert msg["thinking_blocks"] == BLOCKS
    assert "extra_content" not in msg["tool_calls"][0]  # a redacted block is not a call's


def test_messages_client_gemini_compat_signature_goes_back_on_its_call() -> None:
    reply = _wire(MESSAGES.encode_reply(CHAT.decode_reply(GEMINI_COMPAT)))
    body = CHAT.encode_request(MESSAGES.decode_request(_messages_next_turn(reply["content"])), "g")
    first, second = _assistant(body)["tool_calls"]
    assert first["extra_content"] == GOOGLE and "extra_content" not in second


def test_responses_client_litellm_blocks_go_back() -> None:
    reply = _wire(RESPONSES.encode_reply(CHAT.decode_reply(LITELLM)))
    body = CHAT.encode_request(RESPONSES.decode_request(_responses_next_turn(reply)), "m")
    msg = _assistant(body)
    assert msg["thinking_blocks"][0] == BLOCKS[0]
    # Responses has one opaque field: a bare one before a call is taken as the
    # call's signature (what Gemini needs), the readable thinking keeps its own.
    assert msg["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": BLOCKS[1]["data"]}
    }


def test_readable_reasoning_still_stays_home() -> None:
    plain = _reply({"content": "ok", "reasoning_content": "just thinking"})
    reply = CHAT.decode_reply(plain)
    assert reply.parts[0] == ReasoningPart(text="just thinking")
    turn = _wire(RESPONSES.encode_reply(reply))
    body = CHAT.encode_request(RESPONSES.decode_request(_responses_next_turn(turn)), "m")
    assert set(_assistant(body)) == {"role", "content"}


# ---------------------------------------------------------------- streams


def _sse(*deltas: dict[str, Any]) -> bytes:
    out = b""
    for d in deltas:
        chunk = {"id": "c1", "model": "g", "choices": [{"index": 0, "delta": d}]}
        out += b"data: " + orjson.dumps(chunk) + b"\n\n"
    last = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    end = {"id": "c1", "model": "g", "choices": [last]}
    return out + b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n"


def _decode(raw: bytes) -> list[StreamEvent]:
    decoder = ChatStreamDecoder()
    return decoder.feed(raw) + decoder.close()


def _responses_output(events: list[StreamEvent]) -> list[dict[str, Any]]:
    encoder = ResponsesStreamEncoder()
    for e in events:
        encoder.encode(e)
    assert encoder.response is not None
    return list(encoder.response["output"])


def _messages_blocks(events: list[StreamEvent]) -> list[dict[str, Any]]:
    """The content blocks a Messages client assembles from the stream."""
    encoder, blocks = MessagesStreamEncoder(), []
    for e in events:
        for frame in encoder.encode(e).split(b"\n\n"):
            data = [line[6:] for line in frame.split(b"\n") if line.startswith(b"data: ")]
            event = orjson.loads(data[0]) if data else {}
            if event.get("type") == "content_block_start":
                blocks.append(dict(event["content_block"]))
            elif event.get("type") == "content_block_delta":
                d = event["delta"]
                key = {"thinking_delta": "thinking", "signature_delta": "signature"}.get(d["type"])
                if key is not None:
                    blocks[-1][key] = blocks[-1].get(key, "") + d[key]
    return blocks


GEMINI_STREAM = _sse(
    {"role": "assistant", "content": ""},
    {"tool_calls": [{"index": 0, **_call(1, "Paris", extra_content=GOOGLE)}]},
    {"tool_calls": [{"index": 1, **_call(2, "London")}]},
)
# LiteLLM streams each thinking delta beside a signature-less block, then the
# signature in a block of its own, then a redacted block.
LITELLM_STREAM = _sse(
    {"reasoning_content": "Need ", "thinking_blocks": [{"type": "thinking", "thinking": "Need "}]},
    {
        "reasoning_content": "the tool.",
        "thinking_blocks": [{"type": "thinking", "thinking": "the tool."}],
    },
    {"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "YW50LXNpZw=="}]},
    {"thinking_blocks": [BLOCKS[1]]},
    {"tool_calls": [{"index": 0, **_call(1, "Oslo")}]},
)


def test_a_gemini_compat_stream_signs_the_first_call() -> None:
    events = _decode(GEMINI_STREAM)
    assert not any(isinstance(e, StreamError) for e in events)
    output = _responses_output(events)
    assert [o["type"] for o in output] == ["reasoning", "function_call", "function_call"]
    assert output[0]["encrypted_content"] == SIG
    blocks = _messages_blocks(events)
    assert [b["type"] for b in blocks] == ["thinking", "tool_use", "tool_use"]
    assert blocks[0]["signature"] == SIG


def test_a_litellm_stream_keeps_text_once_and_its_signature() -> None:
    events = _decode(LITELLM_STREAM)
    blocks = _messages_blocks(events)
    assert [b["type"] for b in blocks] == ["thinking", "redacted_thinking", "tool_use"]
    assert blocks[0]["thinking"] == "Need the tool."  # not repeated from the blocks
    assert blocks[0]["signature"] == "YW50LXNpZw=="
    assert blocks[1]["data"] == BLOCKS[1]["data"]


def test_a_blocks_only_stream_takes_the_text_from_the_blocks() -> None:
    events = _decode(_sse({"thinking_blocks": [BLOCKS[0]]}, {"content": "hi"}))
    text = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    sigs = [e.signature for e in events if isinstance(e, ReasoningDelta) and e.signature]
    assert (text, sigs) == ("Need the tool.", ["YW50LXNpZw=="])


def test_forebay_as_its_own_chat_upstream() -> None:
    """Forebay's Chat stream (block text repeated after reasoning_content), read
    back by its Chat stream decoder: each signature once, each text once."""
    gemini = GeminiStreamDecoder()
    events = gemini.feed(b"data: " + orjson.dumps(GEMINI_REPLY) + b"\n\n") + gemini.close()
    chat = ChatStreamEncoder(include_usage=True)
    wire = b"".join(chat.encode(e) for e in events)
    output = _responses_output(_decode(wire))
    reasoning = [o for o in output if o["type"] == "reasoning"]
    assert [r["encrypted_content"] for r in reasoning] == [SIG_THOUGHT, SIG_CALL]
    assert [s["text"] for s in reasoning[0]["summary"]] == ["Weighing it."]


# ---------------------------------------------------------------- hostile upstreams

HUGE = "A" * (MAX_OPAQUE + 1)
HOSTILE = [
    {"extra_content": 5},
    {"extra_content": {"google": "x"}},
    {"extra_content": {"google": {"thought_signature": 7}}},
    {"extra_content": {"google": {"thought_signature": {"a": 1}}}},
    {"extra_content": {"google": {"thought_signature": HUGE}}},
]
HOSTILE_BLOCKS: list[Any] = [
    "not a list",
    [5, None, "x"],
    [{"type": "evil", "signature": "s"}],
    [{"type": "thinking", "thinking": 3, "signature": 7}],
    [{"type": "thinking", "thinking": "t", "signature": HUGE}],
    [{"type": "redacted_thinking", "data": ["x"]}],
    [{"type": "redacted_thinking", "data": HUGE}],
]


@pytest.mark.parametrize("extra", HOSTILE)
def test_a_garbled_call_signature_is_dropped(extra: dict[str, Any]) -> None:
    reply = CHAT.decode_reply(_reply({"content": None, "tool_calls": [_call(1, "Oslo", **extra)]}))
    assert [type(p) for p in reply.parts] == [ToolCallPart]
    events = _decode(_sse({"tool_calls": [{"index": 0, **_call(1, "Oslo", **extra)}]}))
    assert [e.kind for e in events if isinstance(e, PartStart)] == ["tool_call"]
    assert not any(isinstance(e, StreamError) for e in events)


@pytest.mark.parametrize("blocks", HOSTILE_BLOCKS)
def test_garbled_thinking_blocks_are_dropped(blocks: Any) -> None:
    msg = {"content": "ok", "reasoning_content": "why", "thinking_blocks": blocks}
    reply = CHAT.decode_reply(_reply(msg))
    reasoning = [p for p in reply.parts if isinstance(p, ReasoningPart)]
    assert all(p.signature is None and p.redacted is None for p in reasoning)
    assert "".join(p.text for p in reasoning) in ("why", "t")
    events = _decode(
        _sse({"reasoning_content": "why", "thinking_blocks": blocks}, {"content": "ok"})
    )
    assert not any(isinstance(e, StreamError) for e in events)
    assert not any(isinstance(e, ReasoningDelta) and (e.signature or e.redacted) for e in events)
    assert not any(isinstance(e, PartStart) and e.redacted for e in events)
