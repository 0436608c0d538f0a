"""Anthropic Messages replies, stop reasons and usage, both ways.

Anthropic's `input_tokens` leaves out the tokens read from or written to the
prompt cache (`cache_read_input_tokens`, `cache_creation_input_tokens`);
canonical input counts them all, so they are added on decode and taken out
on encode.
"""

from __future__ import annotations

from typing import Any

import orjson

from forebay.errors import UpstreamFailure
from forebay.protocols.canonical import (
    GenReply,
    Part,
    ReasoningPart,
    Stop,
    StopReason,
    TextPart,
    ToolCallPart,
    Usage,
)

STOP_REASONS = {
    "end_turn": Stop.END,
    "max_tokens": Stop.MAX_TOKENS,
    "stop_sequence": Stop.STOP_SEQUENCE,
    "tool_use": Stop.TOOL_CALLS,
    "pause_turn": Stop.PAUSE,
    "refusal": Stop.REFUSAL,
    "model_context_window_exceeded": Stop.CONTEXT_WINDOW,
}
# Filtered content is a refusal to an Anthropic client, never a finished turn.
TO_STOP_REASON = {
    Stop.END: "end_turn",
    Stop.MAX_TOKENS: "max_tokens",
    Stop.STOP_SEQUENCE: "stop_sequence",
    Stop.TOOL_CALLS: "tool_use",
    Stop.PAUSE: "pause_turn",
    Stop.REFUSAL: "refusal",
    Stop.CONTENT_FILTER: "refusal",
    Stop.CONTEXT_WINDOW: "model_context_window_exceeded",
    Stop.ERROR: "end_turn",
    Stop.OTHER: "end_turn",
}


def stop_of(reason: Any, sequence: Any = None) -> StopReason:
    if not isinstance(reason, str):
        return StopReason(Stop.OTHER)
    seq = sequence if isinstance(sequence, str) else None
    return StopReason(STOP_REASONS.get(reason, Stop.OTHER), reason, seq)


def stop_reason(stop: StopReason) -> str:
    if stop.kind in (Stop.ERROR, Stop.OTHER) and stop.raw in STOP_REASONS:
        return stop.raw
    return TO_STOP_REASON[stop.kind]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_of(obj: Any, known: Usage | None = None) -> Usage | None:
    """Canonical usage from Anthropic's; a `message_delta`'s counts are
    cumulative and may leave some out, which then keep their `known` value."""
    if not isinstance(obj, dict):
        return known
    base = known or Usage()
    read = obj.get("cache_read_input_tokens")
    write = obj.get("cache_creation_input_tokens")
    cache_read = _int(read) if read is not None else base.cache_read_tokens
    cache_write = _int(write) if write is not None else base.cache_write_tokens
    uncached = obj.get("input_tokens")
    if uncached is not None:
        input_tokens = _int(uncached) + cache_read + cache_write
    else:
        input_tokens = base.input_tokens - base.cache_read_tokens - base.cache_write_tokens
        input_tokens += cache_read + cache_write
    out = obj.get("output_tokens")
    return Usage(
        input_tokens=input_tokens,
        output_tokens=_int(out) if out is not None else base.output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=base.reasoning_tokens,
    )


def usage_body(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": max(0, u.input_tokens - u.cache_read_tokens - u.cache_write_tokens),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.output_tokens,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's `input` must be; text
    that is not a JSON object (a model's mistake) is kept under `_raw`."""
    try:
        args = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return args if isinstance(args, dict) else {"_raw": arguments}


def decode_reply(body: dict[str, Any]) -> GenReply:
    content = body.get("content")
    if body.get("type") != "message" or not isinstance(content, list):
        raise UpstreamFailure("protocol", "the upstream's answer is not an Anthropic message")
    parts: list[Part] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(TextPart(str(block.get("text", ""))))
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            parts.append(ToolCallPart(str(block.get("id")), str(block.get("name")), args))
        elif kind == "thinking":
            signature = block.get("signature")
            parts.append(
                ReasoningPart(
                    text=str(block.get("thinking", "")),
                    signature=signature if isinstance(signature, str) else None,
                )
            )
        elif kind == "redacted_thinking":
            parts.append(ReasoningPart(redacted=str(block.get("data", ""))))
    return GenReply(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        parts=parts,
        stop=stop_of(body.get("stop_reason"), body.get("stop_sequence")),
        usage=usage_of(body.get("usage")),
    )


def block_of(p: Part) -> dict[str, Any] | None:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if isinstance(p, ToolCallPart):
        return {"type": "tool_use", "id": p.id, "name": p.name, "input": tool_input(p.arguments)}
    if isinstance(p, ReasoningPart):
        if p.redacted is not None:
            return {"type": "redacted_thinking", "data": p.redacted}
        return {"type": "thinking", "thinking": p.text, "signature": p.signature or ""}
    return None


def message_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"


def encode_reply(reply: GenReply) -> dict[str, Any]:
    return {
        "id": message_id(reply.id),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [b for p in reply.parts if (b := block_of(p)) is not None],
        "stop_reason": stop_reason(reply.stop),
        "stop_sequence": reply.stop.sequence if reply.stop.kind is Stop.STOP_SEQUENCE else None,
        "usage": usage_body(reply.usage or Usage()),
    }
