"""A compact JSON form of canonical content parts, for what Forebay stores itself
(Responses kept for `previous_response_id`): one object per part, tagged by
`type`, with only the fields that differ from their defaults. It is read back
by the same code that wrote it, so an unknown tag or field is a ValueError
(a damaged row), never a silent guess."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from forebay.protocols.canonical import (
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

_KINDS: dict[str, type[Any]] = {
    "text": TextPart,
    "image": ImagePart,
    "audio": AudioPart,
    "file": FilePart,
    "tool_call": ToolCallPart,
    "tool_result": ToolResultPart,
    "reasoning": ReasoningPart,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def part_to_json(part: Part) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _NAMES[type(part)]}
    for f in fields(part):
        value = getattr(part, f.name)
        if value is None or value is f.default:  # None, False and "" defaults
            continue
        if f.name == "content":
            value = [part_to_json(c) for c in value]
        out[f.name] = value
    return out


def part_from_json(data: Any) -> Part:
    if not isinstance(data, dict):
        raise ValueError("a stored part must be an object")
    cls = _KINDS.get(data.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown stored part type {str(data.get('type'))[:40]!r}")
    kwargs = {k: v for k, v in data.items() if k != "type"}
    if cls is ToolResultPart:
        content = kwargs.get("content", [])
        if not isinstance(content, list):
            raise ValueError("a stored tool result's content must be a list")
        kwargs["content"] = [part_from_json(c) for c in content]
    try:
        part: Part = cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"a stored {data['type']} part does not fit: {err}") from None
    return part


def parts_to_json(parts: list[Part]) -> list[dict[str, Any]]:
    return [part_to_json(p) for p in parts]


def parts_from_json(data: Any) -> list[Part]:
    if not isinstance(data, list):
        raise ValueError("stored parts must be a list")
    return [part_from_json(p) for p in data]
