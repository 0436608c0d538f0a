"""Small conversions the native upstream codecs (Gemini, Bedrock) share: tool
arguments as the JSON object these wires want, token counts fitted to sane
bounds, and ids for replies whose wire carries none. (Data URLs are parsed by
values.split_data_url, the one parser client and upstream sides share.)"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from forebay.errors import UpstreamFailure, bad_request

MAX_COUNT = 1 << 40  # no request uses a trillion tokens; anything larger is garbage


def args_object(arguments: str, *, param: str) -> dict[str, Any]:
    """Tool-call arguments as the JSON object Gemini and Bedrock require: both
    take a structured value, not text, so invalid JSON cannot be passed on."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise bad_request(
            "a tool call's arguments must be a JSON object for this upstream, which takes "
            "them structured; this one is not (send the call as the model produced it, or {})",
            param=param,
        )
    return value


def count(value: Any) -> int:
    """A token count from an upstream: a non-negative int, else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNT:
        return value
    return 0


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def as_object(value: Any, what: str) -> dict[str, Any]:
    """`value` when it is a JSON object; a protocol failure otherwise."""
    if not isinstance(value, dict):
        raise UpstreamFailure("protocol", f"the upstream's {what} is not a JSON object")
    return value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""
