"""The options of a Responses request (tools, tool_choice, text.format,
reasoning, metadata) decoded and checked against the published spec.

`native` collects what only an upstream of this protocol can serve, `kept`
what rides in extras["openai_responses"] for one (see openai_responses.py);
a hosted tool is listed in kept["droppable"] instead (see
gateway/hosted.py), which the caller may turn native when it is forced.
"""

from __future__ import annotations

import re
from typing import Any

from forebay.errors import bad_request
from forebay.protocols.canonical import OutputFormat, Reasoning, Tool, ToolChoice

MAX_SCHEMA_DEPTH = 64  # nesting of a tool's or a format's JSON schema
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"{key} must be a number from {low:g} to {high:g}.", param=key)
    return float(value)


def check_depth(value: Any, where: str) -> None:
    """Refuse a schema nested past MAX_SCHEMA_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise bad_request(
                f"{where} is nested more than {MAX_SCHEMA_DEPTH} levels deep.", param=where
            )
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def schema_of(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be a JSON schema object.", param=where)
    check_depth(value, where)
    return value


def decode_tools(body: dict[str, Any], native: list[str], kept: dict[str, Any]) -> list[Tool]:
    """Function tools, including those grouped in a `namespace` tool (Codex
    sends its sub-agent tools so), which any upstream can be offered as plain
    functions; a namespaced name that clashes with another tool stays native."""
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("tools must be a list.", param="tools")
    tools: list[Tool] = []
    hosted: list[dict[str, Any]] = []
    grouped: list[tuple[str, list[Tool]]] = []
    for i, t in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("type"), str):
            raise bad_request(f"{where} must be an object with a type.", param=where)
        if t["type"] == "function":
            tools.append(_function(t, where))
            continue
        hosted.append(t)
        inner = _namespace(t, where) if t["type"] == "namespace" else None
        if inner is None:
            kind = t["type"][:40]
            kept.setdefault("droppable", []).append(
                {"name": kind, "where": f"{where} ({kind} tool)"}
            )
        else:
            grouped.append((where, inner))
    namespaced: list[str] = []
    for where, inner in grouped:
        taken = {t.name for t in tools}
        if any(f.name in taken for f in inner) or len({f.name for f in inner}) < len(inner):
            native.append(f"{where} (namespace tool whose names clash)")
            continue
        tools.extend(inner)
        namespaced.extend(f.name for f in inner)
    if hosted:
        kept["tools"] = hosted
    # A native upstream gets the namespaces back as sent: encode_request adds
    # only the functions that are not inside one.
    if namespaced:
        kept["namespaced"] = namespaced
    return tools


def _namespace(t: dict[str, Any], where: str) -> list[Tool] | None:
    """The function tools of a namespace tool, or None if it holds anything else."""
    inner = t.get("tools")
    if not isinstance(inner, list) or not all(
        isinstance(f, dict) and f.get("type") == "function" for f in inner
    ):
        return None
    return [_function(f, f"{where}.tools[{j}]") for j, f in enumerate(inner)]


def _function(t: dict[str, Any], where: str) -> Tool:
    name, description, strict = t.get("name"), t.get("description"), t.get("strict")
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad_request(
            f"{where}.name must be 1-64 letters, digits, _ or -.", param=f"{where}.name"
        )
    if description is not None and not isinstance(description, str):
        raise bad_request(f"{where}.description must be a string.", param=f"{where}.description")
    if strict is not None and not isinstance(strict, bool):
        raise bad_request(f"{where}.strict must be true or false.", param=f"{where}.strict")
    params = schema_of(t.get("parameters"), f"{where}.parameters") or {
        "type": "object",
        "properties": {},
    }
    return Tool(name, description, params, strict)


def decode_tool_choice(
    body: dict[str, Any], native: list[str], kept: dict[str, Any]
) -> ToolChoice | None:
    raw, parallel = body.get("tool_choice"), body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise bad_request("parallel_tool_calls must be true or false.", param="parallel_tool_calls")
    if raw is None:
        return ToolChoice(parallel=parallel) if parallel is not None else None
    if raw in ("auto", "none", "required"):
        return ToolChoice(raw, parallel=parallel)
    if isinstance(raw, dict) and raw.get("type") == "function":
        if not isinstance(raw.get("name"), str):
            raise bad_request("tool_choice.name must be a string.", param="tool_choice.name")
        return ToolChoice("tool", raw["name"], parallel)
    if isinstance(raw, dict) and isinstance(raw.get("type"), str):
        kept["tool_choice"] = raw
        native.append(f"tool_choice ({raw['type'][:40]})")
        return ToolChoice("auto", parallel=parallel)
    raise bad_request(
        "tool_choice must be auto, none, required or a tool object.", param="tool_choice"
    )


def decode_format(body: dict[str, Any], kept: dict[str, Any]) -> OutputFormat | None:
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        raise bad_request("text must be an object.", param="text")
    if text.get("verbosity") is not None:
        kept["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return OutputFormat(kind)
    if kind != "json_schema":
        raise bad_request(
            "text.format.type must be text, json_object or json_schema.", param="text.format.type"
        )
    name, strict = fmt.get("name"), fmt.get("strict")
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad_request(
            "text.format.name must be 1-64 letters, digits, _ or -.", param="text.format.name"
        )
    if strict is not None and not isinstance(strict, bool):
        raise bad_request("text.format.strict must be true or false.", param="text.format.strict")
    schema = schema_of(fmt.get("schema"), "text.format.schema")
    if schema is None:
        raise bad_request(
            "text.format.schema is required for json_schema.", param="text.format.schema"
        )
    if isinstance(fmt.get("description"), str):
        kept["format_description"] = fmt["description"]
    return OutputFormat("json_schema", name, schema, strict)


def decode_reasoning(body: dict[str, Any]) -> Reasoning | None:
    raw = body.get("reasoning")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_request("reasoning must be an object.", param="reasoning")
    effort, summary = raw.get("effort"), raw.get("summary") or raw.get("generate_summary")
    for key, value in (("effort", effort), ("summary", summary)):
        if value is not None and not isinstance(value, str):
            raise bad_request(f"reasoning.{key} must be a string.", param=f"reasoning.{key}")
    return Reasoning(effort=effort, summary=summary)


def decode_metadata(body: dict[str, Any]) -> dict[str, str]:
    raw = body.get("metadata")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 16:
        raise bad_request("metadata must be an object of at most 16 pairs.", param="metadata")
    for k, v in raw.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise bad_request(
                "metadata keys are at most 64 characters, values strings of at most 512.",
                param="metadata",
            )
    return dict(raw)


def refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("background"):
        raise bad_request(
            "background responses are not supported by Forebay; send background: false.",
            param="background",
        )
    if body.get("conversation") is not None:
        raise bad_request(
            "conversation objects are not supported by Forebay; continue a conversation "
            "with previous_response_id.",
            param="conversation",
        )
