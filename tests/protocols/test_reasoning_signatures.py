"""Reasoning signatures (Gemini thoughtSignature, Bedrock reasoningText.signature
and redactedContent) reach Chat and Responses clients and come back from them
intact, so a multi-turn tool conversation stays valid for the upstream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forebay.errors import ForebayError
from forebay.protocols import bedrock_converse, gemini, openai_chat
from forebay.protocols.canonical import PartStart, ReasoningDelta, StreamEvent
from forebay.protocols.gemini_stream import GeminiStreamDecoder
from forebay.protocols.openai_chat_stream import ChatStreamEncoder
from forebay.protocols.openai_responses import CODEC as RESPONSES
from forebay.protocols.openai_responses_stream import ResponsesStreamEncoder
from forebay.protocols.values import MAX_OPAQUE

SIG_CALL, SIG_THOUGHT = "c2lnLWNhbGw=", "c2lnLXRob3VnaHQ="
GEMINI_REPLY = {
    "responseId": "g1",
    "modelVersion": "gemini-3-pro",
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Weighing it.", "thought": True, "thoughtSignature": SIG_THOUGHT},
                    {"text": "Let me look."},
                    {
                        "functionCall": {"name": "weather", "args": {"city": "Oslo"}},
                        "thoughtSignature": SIG_CALL,
                    },
                ],
            },
            "finishReason": "STOP",
        }
    ],
}
BEDROCK_REPLY = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"reasoningContent": {"reasoningText": {"text": "Hm.", "signature": "bsig"}}},
                {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}},
                {"toolUse": {"toolUseId": "tu1", "name": "weather", "input": {"city": "Oslo"}}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {"inputTokens": 5, "outputTokens": 3},
}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


def _chat_turn(reply_body: dict[str, Any], call_id: str) -> dict[str, Any]:
    msg = reply_body["choices"][0]["message"]
    return {
        "model": "m",
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            msg,
            {"role": "tool", "tool_call_id": call_id, "content": "6 °C"},
        ],
    }


def _responses_turn(reply_body: dict[str, Any], call_id: str) -> dict[str, Any]:
    items = [{"role": "user", "content": "Weather in Oslo?"}, *reply_body["output"]]
    items.append({"type": "function_call_output", "call_id": call_id, "output": "6 °C"})
    return {"model": "m", "input": items}


def _gemini_model_turn(body: dict[str, Any]) -> list[dict[str, Any]]:
    [turn] = [c for c in body["contents"] if c["role"] == "model"]
    return list(turn["parts"])


def test_gemini_chat_gemini() -> None:
    reply = openai_chat.encode_reply(gemini.decode_reply(GEMINI_REPLY))
    msg = reply["choices"][0]["message"]
    [call] = msg["tool_calls"]
    assert call["extra_content"] == {"google": {"thought_signature": SIG_CALL}}
    assert msg["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Weighing it.", "signature": SIG_THOUGHT}
    ]
    wire = orjson.loads(orjson.dumps(_chat_turn(reply, call["id"])))
    back = gemini.encode_request(openai_chat.decode_request(wire))
    parts = _gemini_model_turn(back)
    assert parts[0] == {"text": "Weighing it.", "thought": True, "thoughtSignature": SIG_THOUGHT}
    assert parts[1] == {"text": "Let me look."}
    assert parts[2]["functionCall"]["name"] == "weather"
    assert parts[2]["thoughtSignature"] == SIG_CALL


def test_gemini_responses_gemini() -> None:
    reply = RESPONSES.encode_reply(gemini.decode_reply(GEMINI_REPLY))
    reasoning = [o for o in reply["output"] if o["type"] == "reasoning"]
    assert [r.get("encrypted_content") for r in reasoning] == [SIG_THOUGHT, SIG_CALL]
    assert all(r["summary"] or r["encrypted_content"] for r in reasoning)  # never empty
    call = next(o for o in reply["output"] if o["type"] == "function_call")
    back = gemini.encode_request(RESPONSES.decode_request(_responses_turn(reply, call["call_id"])))
    parts = _gemini_model_turn(back)
    assert parts[0] == {"text": "Weighing it.", "thought": True, "thoughtSignature": SIG_THOUGHT}
    fc = next(p for p in parts if "functionCall" in p)
    assert fc["thoughtSignature"] == SIG_CALL


def _bedrock_reasoning(body: dict[str, Any]) -> list[dict[str, Any]]:
    [turn] = [m for m in body["messages"] if m["role"] == "assistant"]
    return [b["reasoningContent"] for b in turn["content"] if "reasoningContent" in b]


WANT_BEDROCK = [
    {"reasoningText": {"text": "Hm.", "signature": "bsig"}},
    {"redactedContent": "cmVkYWN0ZWQ="},
]


def test_bedrock_responses_bedrock() -> None:
    reply = RESPONSES.encode_reply(bedrock_converse.decode_reply(BEDROCK_REPLY))
    back = RESPONSES.decode_request(_responses_turn(reply, "tu1"))
    assert _bedrock_reasoning(bedrock_converse.encode_request(back)) == WANT_BEDROCK


def test_bedrock_chat_bedrock() -> None:
    reply = openai_chat.encode_reply(bedrock_converse.decode_reply(BEDROCK_REPLY))
    assert reply["choices"][0]["message"]["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Hm.", "signature": "bsig"},
        {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
    ]
    back = openai_chat.decode_request(_chat_turn(reply, "tu1"))
    assert _bedrock_reasoning(bedrock_converse.encode_request(back)) == WANT_BEDROCK


def _gemini_stream() -> list[StreamEvent]:
    raw = b"data: " + orjson.dumps(GEMINI_REPLY) + b"\n\n"
    decoder = GeminiStreamDecoder()
    return decoder.feed(raw) + decoder.close()


def test_streams_carry_the_signatures() -> None:
    events = _gemini_stream()
    assert any(isinstance(e, ReasoningDelta) and e.signature == SIG_CALL for e in events)
    chat = ChatStreamEncoder(include_usage=False)
    deltas = [
        orjson.loads(line[6:])["choices"][0]["delta"]
        for e in events
        for line in chat.encode(e).split(b"\n\n")
        if line.startswith(b"data: {") and b'"choices":[{' in line
    ]
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": SIG_CALL}}
    blocks = [b for d in deltas for b in d.get("thinking_blocks", [])]
    assert blocks == [{"type": "thinking", "thinking": "Weighing it.", "signature": SIG_THOUGHT}]
    responses = ResponsesStreamEncoder()
    for e in events:
        responses.encode(e)
    assert responses.response is not None
    out = responses.response["output"]
    assert [o.get("encrypted_content") for o in out if o["type"] == "reasoning"] == [
        SIG_THOUGHT,
        SIG_CALL,
    ]
    assert any(isinstance(e, PartStart) and e.kind == "tool_call" for e in events)


HUGE = "A" * (MAX_OPAQUE + 1)


@pytest.mark.parametrize(
    "msg",
    [
        {"thinking_blocks": [{"type": "thinking", "thinking": "x", "signature": 7}]},
        {"thinking_blocks": [{"type": "thinking", "thinking": "x", "signature": HUGE}]},
        {"thinking_blocks": [{"type": "redacted_thinking", "data": ["x"]}]},
        {"thinking_blocks": [{"type": "redacted_thinking"}]},
        {"thinking_blocks": [{"type": "evil"}]},
        {"thinking_blocks": "not a list"},
        {"tool_calls": [{"id": "c", "function": {"name": "f"}, "extra_content": 5}]},
        {
            "tool_calls": [
                {
                    "id": "c",
                    "function": {"name": "f"},
                    "extra_content": {"google": {"thought_signature": {"a": 1}}},
                }
            ]
        },
        {
            "tool_calls": [
                {
                    "id": "c",
                    "function": {"name": "f"},
                    "extra_content": {"google": {"thought_signature": HUGE}},
                }
            ]
        },
    ],
)
def test_hostile_chat_signatures_are_400s(msg: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "assistant", "content": "x", **msg}]}
    with pytest.raises(ForebayError) as err:
        openai_chat.decode_request(body)
    assert err.value.status == 400


@pytest.mark.parametrize("value", [HUGE, 12, ["x"]])
def test_hostile_responses_encrypted_content_is_a_400(value: Any) -> None:
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": value}
    with pytest.raises(ForebayError) as err:
        RESPONSES.decode_request({"model": "m", "input": [item]})
    assert err.value.status == 400
