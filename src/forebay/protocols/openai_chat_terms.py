"""Chat Completions' words for the end of a turn and for usage, both ways."""

from __future__ import annotations

from typing import Any

from forebay.protocols.canonical import Stop, StopReason, Usage
from forebay.protocols.values import as_dict

FINISH_TO_STOP = {
    "stop": Stop.END,
    "length": Stop.MAX_TOKENS,
    "tool_calls": Stop.TOOL_CALLS,
    "function_call": Stop.TOOL_CALLS,
    "content_filter": Stop.CONTENT_FILTER,
}
# A canonical stop Chat has no word for takes the nearest that keeps its
# meaning: a refusal is filtered content, not a finished turn; a paused or
# window-limited turn is cut short, like one out of tokens.
STOP_TO_FINISH = {
    Stop.END: "stop",
    Stop.STOP_SEQUENCE: "stop",
    Stop.MAX_TOKENS: "length",
    Stop.CONTEXT_WINDOW: "length",
    Stop.PAUSE: "length",
    Stop.TOOL_CALLS: "tool_calls",
    Stop.CONTENT_FILTER: "content_filter",
    Stop.REFUSAL: "content_filter",
    Stop.ERROR: "stop",
    Stop.OTHER: "stop",
}


def finish_reason(stop: StopReason) -> str:
    if stop.kind in (Stop.ERROR, Stop.OTHER) and stop.raw in FINISH_TO_STOP:
        return stop.raw
    return STOP_TO_FINISH[stop.kind]


def stop_of(finish: Any, matched: Any = None) -> StopReason:
    if not isinstance(finish, str):
        return StopReason(Stop.OTHER)
    kind = FINISH_TO_STOP.get(finish, Stop.OTHER)
    if kind is Stop.END and isinstance(matched, str):  # vLLM names the stop string
        return StopReason(Stop.STOP_SEQUENCE, finish, matched)
    return StopReason(kind, finish)


def usage_of(obj: Any) -> Usage | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt_tokens"), int):
        return None
    cached = as_dict(obj.get("prompt_tokens_details")).get("cached_tokens")
    reasoning = as_dict(obj.get("completion_tokens_details")).get("reasoning_tokens")
    return Usage(
        input_tokens=obj["prompt_tokens"],
        output_tokens=_int(obj.get("completion_tokens")),
        cache_read_tokens=_int(cached),
        reasoning_tokens=_int(reasoning),
    )


def usage_body(u: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    }
    if u.cache_read_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": u.cache_read_tokens}
    if u.reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return body


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
