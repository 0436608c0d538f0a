"""The Responses API's Response object, both ways: canonical reply -> Response
(what a client gets, streams and retrieves later) and an upstream's Response ->
canonical reply.

A Response echoes its request (instructions, tools, tool_choice, text...), so
the object the client gets is built from a `ResponseContext` that the POST
handler makes from the request body once; without one (a codec used on its
own) the echo is the API's defaults and the id is new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

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
from forebay.protocols.openai_responses_items import new_id

# Request fields a Response repeats, with what the API answers when they were not sent.
ECHO_DEFAULTS: dict[str, Any] = {
    "background": False,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}
ECHO_ALSO = ("safety_identifier", "prompt_cache_key")


def echo_of(body: dict[str, Any]) -> dict[str, Any]:
    echo = dict(ECHO_DEFAULTS)
    for key in (*ECHO_DEFAULTS, *ECHO_ALSO):
        if body.get(key) is not None:
            echo[key] = body[key]
    return echo


@dataclass(slots=True)
class ResponseContext:
    """The id, time and echoed request fields of one Response, fixed before the
    upstream is called so that the streamed, returned and stored objects agree."""

    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    model: str | None = None  # the alias the client asked for; else the reply's
    echo: dict[str, Any] = field(default_factory=lambda: dict(ECHO_DEFAULTS))


# ---------------------------------------------------------------- canonical -> wire


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def status_of(stop: StopReason) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """(status, incomplete_details, error): a filtered or cut-off answer is
    `incomplete` with its reason, never `completed`."""
    kind = stop.kind
    if kind in (Stop.MAX_TOKENS, Stop.CONTEXT_WINDOW):
        return "incomplete", {"reason": "max_output_tokens"}, None
    if kind in (Stop.CONTENT_FILTER, Stop.REFUSAL):
        return "incomplete", {"reason": "content_filter"}, None
    if kind is Stop.ERROR:
        why = f" ({stop.raw[:200]})" if stop.raw else ""
        error = {"code": "server_error", "message": f"The model's upstream failed{why}."}
        return "failed", None, error
    return "completed", None, None


def output_item(
    part: Part, *, status: str = "completed", item_id: str | None = None
) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {
            "id": item_id or new_id("msg"),
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [{"type": "output_text", "text": part.text, "annotations": []}],
        }
    if isinstance(part, ToolCallPart):
        return {
            "id": item_id or new_id("fc"),
            "type": "function_call",
            "status": status,
            "call_id": part.id,
            "name": part.name,
            "arguments": part.arguments,
        }
    if isinstance(part, ReasoningPart):
        out: dict[str, Any] = {
            "id": part.id or item_id or new_id("rs"),
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": part.text}] if part.text else [],
        }
        opaque = part.redacted if part.redacted is not None else part.signature
        if opaque is not None:
            out["encrypted_content"] = opaque  # a Gemini or Bedrock signature rides here too
        return out
    raise ValueError(f"{type(part).__name__} is not an output part")


def response_object(
    ctx: ResponseContext,
    model: str,
    output: list[dict[str, Any]],
    *,
    status: str,
    usage: Usage | None,
    incomplete: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": ctx.id,
        "object": "response",
        "created_at": ctx.created_at,
        # The spec's Response has completed_at (a number, or null until it is completed).
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": ctx.model or model,
        "output": output,
        "usage": usage_json(usage),
        **ctx.echo,
    }


def encode_reply(reply: GenReply, ctx: ResponseContext | None = None) -> dict[str, Any]:
    ctx = ctx or ResponseContext()
    status, incomplete, error = status_of(reply.stop)
    items = [
        output_item(p)
        for p in reply.parts
        if isinstance(p, TextPart | ToolCallPart | ReasoningPart)
    ]
    if status == "incomplete" and items and "status" in items[-1]:
        items[-1]["status"] = "incomplete"
    return response_object(
        ctx,
        reply.model,
        items,
        status=status,
        usage=reply.usage,
        incomplete=incomplete,
        error=error,
    )


# ---------------------------------------------------------------- wire -> canonical


def _count(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_of(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=_count(raw, "input_tokens"),
        output_tokens=_count(raw, "output_tokens"),
        cache_read_tokens=_count(raw.get("input_tokens_details"), "cached_tokens"),
        cache_write_tokens=_count(raw.get("input_tokens_details"), "cache_write_tokens"),
        reasoning_tokens=_count(raw.get("output_tokens_details"), "reasoning_tokens"),
    )


def stop_of(body: dict[str, Any], *, tool_calls: bool, refused: bool) -> StopReason:
    status = body.get("status")
    if status == "incomplete":
        details = body.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if reason == "content_filter":
            return StopReason(Stop.CONTENT_FILTER, raw=reason)
        if reason == "max_output_tokens":
            return StopReason(Stop.MAX_TOKENS, raw=reason)
        return StopReason(Stop.OTHER, raw=str(reason)[:60] if reason else "incomplete")
    if status == "failed":
        err = body.get("error")
        code = err.get("code") if isinstance(err, dict) else None
        return StopReason(Stop.ERROR, raw=str(code)[:60] if code else "failed")
    if status == "completed":
        if refused:
            return StopReason(Stop.REFUSAL, raw="refusal")
        return StopReason(Stop.TOOL_CALLS if tool_calls else Stop.END, raw="completed")
    return StopReason(Stop.OTHER, raw=str(status)[:60])


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise UpstreamFailure(
            "protocol", f"the upstream's Response has a {obj.get('type')} without {key}"
        )
    return value


def parts_of_output(output: list[Any]) -> tuple[list[Part], bool]:
    """The canonical parts of a Response's output, and whether it refused.
    Hosted-tool items (web search calls, ...) have no canonical form: skipped."""
    parts: list[Part] = []
    refused = False
    for item in output:
        if not isinstance(item, dict):
            raise UpstreamFailure("protocol", "the upstream's Response output holds a non-object")
        kind = item.get("type")
        if kind == "message":
            for c in item.get("content") or []:
                if isinstance(c, dict) and c.get("type") == "output_text":
                    parts.append(TextPart(_str(c, "text")))
                elif isinstance(c, dict) and c.get("type") == "refusal":
                    parts.append(TextPart(_str(c, "refusal")))
                    refused = True
        elif kind == "function_call":
            parts.append(
                ToolCallPart(_str(item, "call_id"), _str(item, "name"), _str(item, "arguments"))
            )
        elif kind == "reasoning":
            texts = [s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)]
            if not texts:
                texts = [
                    s.get("text", "") for s in item.get("content") or [] if isinstance(s, dict)
                ]
            encrypted = item.get("encrypted_content")
            parts.append(
                ReasoningPart(
                    "\n\n".join(t for t in texts if isinstance(t, str)),
                    redacted=encrypted if isinstance(encrypted, str) else None,
                    id=item.get("id") if isinstance(item.get("id"), str) else None,
                )
            )
    return parts, refused


def decode_reply(body: dict[str, Any]) -> GenReply:
    output = body.get("output") if isinstance(body, dict) else None
    if not isinstance(output, list) or not isinstance(body.get("id"), str):
        raise UpstreamFailure(
            "protocol", "the upstream's reply is not a Responses API Response object"
        )
    parts, refused = parts_of_output(output)
    tool_calls = any(isinstance(p, ToolCallPart) for p in parts)
    created = body.get("created_at")
    return GenReply(
        id=body["id"],
        model=str(body.get("model") or "")[:200],
        parts=parts,
        stop=stop_of(body, tool_calls=tool_calls, refused=refused),
        usage=usage_of(body.get("usage")),
        created=int(created)
        if isinstance(created, int | float) and not isinstance(created, bool)
        else 0,
    )
