"""Anthropic Messages <-> canonical: requests here, replies and usage in
anthropic_reply.py, streams in anthropic_stream.py.

Decoding checks what Anthropic's API reference requires (model, max_tokens,
messages of role user or assistant, known content block types) and nothing
stricter. A mid-conversation `system` message (Anthropic accepts them; Claude
Code sends them for models it does not know, as Forebay aliases are) is relayed
in place to an Anthropic upstream and, translated, its text joins `system`, as
a Chat system message does. Blocks of Anthropic's server tools (web search results and the
like) have no meaning elsewhere: they are accepted, passed on untouched to an
Anthropic upstream (the body is relayed as it came), and left out when the
request is translated for another wire.
"""

from __future__ import annotations

from typing import Any

import orjson

from forebay.errors import bad_request
from forebay.protocols.anthropic_encode import encode_request
from forebay.protocols.anthropic_reply import decode_reply, encode_reply
from forebay.protocols.anthropic_stream import MessagesStreamDecoder, MessagesStreamEncoder
from forebay.protocols.canonical import (
    FilePart,
    GenRequest,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from forebay.protocols.values import (
    as_dict,
    as_list,
    opt_bool,
    opt_int,
    opt_number,
    opt_str,
)

# Server-tool blocks: valid in a conversation, meaningless to any other wire.
SERVER_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
        "search_result",
    }
)


MIN_THINKING_BUDGET = 1024
MAX_USER_ID = 256
SERVICE_TIERS = frozenset({"auto", "standard_only"})
# Request fields only Anthropic's own API can act on: kept for an Anthropic
# upstream (the body passes untouched), refused before a translation.
NATIVE_ONLY = ("container", "mcp_servers")


# ---------------------------------------------------------------- requests in


def _source(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = as_dict(block.get("source"), f"{where}.source")
    if source.get("type") not in ("base64", "url", "file", "text", "content"):
        raise bad_request(
            f"{where}.source.type must be base64, url, file, text or content.", param=where
        )
    return source


def _image(block: dict[str, Any], where: str) -> ImagePart | FilePart:
    s = _source(block, where)
    cache = block.get("cache_control")
    if s["type"] == "base64":
        data = opt_str(s.get("data"), f"{where}.source.data")
        media = opt_str(s.get("media_type"), f"{where}.source.media_type")
        return ImagePart(data=data or "", media_type=media, cache_control=cache)
    if s["type"] == "url":
        url = opt_str(s.get("url"), f"{where}.source.url")
        return ImagePart(url=url or "", cache_control=cache)
    if s["type"] == "file":
        return FilePart(file_id=opt_str(s.get("file_id"), f"{where}.source.file_id"))
    raise bad_request(f"{where}.source.type must be base64, url or file.", param=where)


def _document(block: dict[str, Any], where: str) -> list[TextPart | ImagePart | FilePart]:
    s = _source(block, where)
    title = opt_str(block.get("title"), f"{where}.title")
    cache = block.get("cache_control")
    kind = s["type"]
    if kind == "text":
        return [TextPart(opt_str(s.get("data"), f"{where}.source.data") or "", cache)]
    if kind == "content":
        inner = s.get("content")
        if isinstance(inner, str):
            return [TextPart(inner, cache)]
        return [
            TextPart(str(b.get("text", "")))
            for b in as_list(inner, f"{where}.source.content")
            if isinstance(b, dict) and b.get("type") == "text"
        ]
    return [
        FilePart(
            data=opt_str(s.get("data"), f"{where}.source.data") if kind == "base64" else None,
            url=opt_str(s.get("url"), f"{where}.source.url") if kind == "url" else None,
            file_id=opt_str(s.get("file_id"), f"{where}.source.file_id"),
            filename=title,
            media_type=opt_str(s.get("media_type"), f"{where}.source.media_type")
            or "application/pdf",
            cache_control=cache,
        )
    ]


def _tool_result(block: dict[str, Any], where: str) -> ToolResultPart:
    call_id = opt_str(block.get("tool_use_id"), f"{where}.tool_use_id")
    if not call_id:
        raise bad_request(f"{where}.tool_use_id is required.", param=where)
    content = block.get("content")
    parts: list[TextPart | ImagePart | FilePart] = []
    if isinstance(content, str):
        parts.append(TextPart(content))
    elif content is not None:
        for i, inner in enumerate(as_list(content, f"{where}.content")):
            got = _block(as_dict(inner, f"{where}.content[{i}]"), f"{where}.content[{i}]")
            parts.extend(p for p in got if isinstance(p, TextPart | ImagePart | FilePart))
    return ToolResultPart(
        call_id,
        parts,
        is_error=opt_bool(block.get("is_error"), f"{where}.is_error") or False,
        cache_control=block.get("cache_control"),
    )


def _block(block: dict[str, Any], where: str) -> list[Part]:
    kind = block.get("type")
    if kind == "text":
        text = opt_str(block.get("text"), f"{where}.text")
        if text is None:
            raise bad_request(f"{where}.text is required.", param=where)
        return [TextPart(text, block.get("cache_control"))]
    if kind == "image":
        return [_image(block, where)]
    if kind == "document":
        return list(_document(block, where))
    if kind == "tool_use":
        call_id = opt_str(block.get("id"), f"{where}.id")
        name = opt_str(block.get("name"), f"{where}.name")
        if not call_id or not name:
            raise bad_request(f"{where} needs its id and name.", param=where)
        arguments = orjson.dumps(as_dict(block.get("input", {}), f"{where}.input")).decode()
        return [ToolCallPart(call_id, name, arguments)]
    if kind == "tool_result":
        return [_tool_result(block, where)]
    if kind == "thinking":
        return [
            ReasoningPart(
                text=opt_str(block.get("thinking"), f"{where}.thinking") or "",
                signature=opt_str(block.get("signature"), f"{where}.signature"),
            )
        ]
    if kind == "redacted_thinking":
        return [ReasoningPart(redacted=opt_str(block.get("data"), f"{where}.data") or "")]
    if isinstance(kind, str) and kind in SERVER_BLOCKS:
        return []
    raise bad_request(
        f"{where}.type is {str(kind)[:40]!r}; content blocks are text, image, document, "
        "tool_use, tool_result, thinking, redacted_thinking or a server tool's blocks.",
        param=where,
    )


def _message(m: Any, i: int) -> Message | list[TextPart]:
    where = f"messages.{i}"
    msg = as_dict(m, where)
    role = msg.get("role")
    if role == "system":
        return _system(msg.get("content"), f"{where}.content", others=True)
    if role not in ("user", "assistant"):
        raise bad_request(
            f"{where}.role is {str(role)[:40]!r}; it must be 'user', 'assistant' or 'system'.",
            param=f"{where}.role",
        )
    content = msg.get("content")
    if isinstance(content, str):
        return Message(role, [TextPart(content)])
    parts: list[Part] = []
    for j, block in enumerate(as_list(content, f"{where}.content")):
        parts.extend(_block(as_dict(block, f"{where}.content.{j}"), f"{where}.content.{j}"))
    return Message(role, parts)


def _system(system: Any, where: str = "system", *, others: bool = False) -> list[TextPart]:
    """Text blocks; with `others`, blocks of other types (a system message's
    tool_addition / tool_removal) are accepted and left out of translation."""
    if system is None:
        return []
    if isinstance(system, str):
        return [TextPart(system)] if system else []
    out = []
    for i, block in enumerate(as_list(system, where)):
        b = as_dict(block, f"{where}.{i}")
        if others and b.get("type") != "text" and isinstance(b.get("type"), str):
            continue
        if b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise bad_request(f"{where}.{i} must be a text block.", param=where)
        out.append(TextPart(b["text"], b.get("cache_control")))
    return out


def _tools(tools: Any) -> tuple[list[Tool], list[dict[str, Any]], list[dict[str, str]]]:
    """Client tools, and Anthropic's own (server) tools, kept apart; and each
    server tool's name (its type when it has none) and where it was."""
    client: list[Tool] = []
    server: list[dict[str, Any]] = []
    hosted: list[dict[str, str]] = []
    for i, t in enumerate(as_list(tools, "tools")):
        tool = as_dict(t, f"tools.{i}")
        if tool.get("type") not in (None, "custom"):
            server.append(tool)
            kind = str(tool["type"])[:40]
            name = tool.get("name")
            name = name[:64] if isinstance(name, str) and name else kind
            hosted.append({"name": name, "where": f"tools.{i} ({kind} tool)"})
            continue
        name = opt_str(tool.get("name"), f"tools.{i}.name")
        if not name:
            raise bad_request(f"tools.{i}.name is required.", param=f"tools.{i}.name")
        client.append(
            Tool(
                name=name,
                description=opt_str(tool.get("description"), f"tools.{i}.description"),
                parameters=as_dict(tool.get("input_schema"), f"tools.{i}.input_schema"),
                strict=opt_bool(tool.get("strict"), f"tools.{i}.strict"),
                cache_control=tool.get("cache_control"),
            )
        )
    return client, server, hosted


def _tool_choice(choice: Any) -> ToolChoice | None:
    if choice is None:
        return None
    c = as_dict(choice, "tool_choice")
    kind = c.get("type")
    modes = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}
    if not isinstance(kind, str) or kind not in modes:
        raise bad_request("tool_choice.type must be auto, any, tool or none.", param="tool_choice")
    name = opt_str(c.get("name"), "tool_choice.name")
    if kind == "tool" and not name:
        raise bad_request("tool_choice of type 'tool' needs the tool's name.", param="tool_choice")
    disable = opt_bool(c.get("disable_parallel_tool_use"), "disable_parallel_tool_use")
    return ToolChoice(
        mode=modes[kind],  # type: ignore[arg-type]
        name=name,
        parallel=None if disable is None else not disable,
    )


def _thinking(thinking: Any) -> Reasoning | None:
    if thinking is None:
        return None
    t = as_dict(thinking, "thinking")
    if t.get("type") == "enabled":
        budget = opt_int(t.get("budget_tokens"), "thinking.budget_tokens")
        if budget is None:
            raise bad_request("thinking.budget_tokens is required.", param="thinking.budget_tokens")
        if budget < MIN_THINKING_BUDGET:
            raise bad_request(
                f"thinking.budget_tokens must be at least {MIN_THINKING_BUDGET}.",
                param="thinking.budget_tokens",
            )
        return Reasoning(budget_tokens=budget)
    if t.get("type") in ("disabled", "adaptive"):
        return None
    raise bad_request("thinking.type must be enabled or disabled.", param="thinking.type")


def _unit(body: dict[str, Any], name: str) -> float | None:
    value = opt_number(body.get(name), name)
    if value is not None and not 0 <= value <= 1:
        raise bad_request(f"{name} must be between 0 and 1.", param=name)
    return value


def decode_request(body: dict[str, Any]) -> GenRequest:
    max_tokens = opt_int(body.get("max_tokens"), "max_tokens")
    if max_tokens is None or max_tokens < 1:
        raise bad_request("max_tokens: Field required (a positive integer).", param="max_tokens")
    return decode_counted(body, max_tokens)


def decode_counted(body: dict[str, Any], max_tokens: int | None = None) -> GenRequest:
    """A request as count_tokens takes it: max_tokens optional."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required (a string).", param="model")
    system = _system(body.get("system"))
    messages: list[Message] = []
    for i, m in enumerate(as_list(body.get("messages"), "messages")):
        got = _message(m, i)
        if isinstance(got, Message):
            messages.append(got)
        else:
            system.extend(got)
    temperature = _unit(body, "temperature")
    top_p = _unit(body, "top_p")
    top_k = opt_int(body.get("top_k"), "top_k")
    if top_k is not None and top_k < 0:
        raise bad_request("top_k must be 0 or more.", param="top_k")
    stops = as_list(body.get("stop_sequences") or [], "stop_sequences")
    if not all(isinstance(s, str) for s in stops):
        raise bad_request("stop_sequences must be a list of strings.", param="stop_sequences")
    tools, server_tools, hosted = (
        _tools(body["tools"]) if body.get("tools") is not None else ([], [], [])
    )
    metadata = body.get("metadata")
    user = (
        opt_str(as_dict(metadata, "metadata").get("user_id"), "metadata.user_id")
        if (metadata is not None)
        else None
    )
    if user is not None and len(user) > MAX_USER_ID:
        raise bad_request(
            f"metadata.user_id must be at most {MAX_USER_ID} characters.", param="metadata.user_id"
        )
    tier = body.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise bad_request("service_tier must be 'auto' or 'standard_only'.", param="service_tier")
    stream = opt_bool(body.get("stream"), "stream")
    choice = _tool_choice(body.get("tool_choice"))
    extras: dict[str, Any] = {"server_tools": server_tools} if server_tools else {}
    native = [f for f in NATIVE_ONLY if body.get(f) is not None]
    if hosted:
        # Forced (named by tool_choice, or `any` with no client tool to call):
        # dropping it would change the answer, so only Anthropic may serve it.
        if choice is not None and choice.mode == "required" and not tools:
            native.extend(d["where"] for d in hosted)
        else:
            named = choice.name if choice is not None and choice.mode == "tool" else None
            native.extend(d["where"] for d in hosted if d["name"] == named)
            droppable = [d for d in hosted if d["name"] != named]
            if droppable:
                extras["droppable"] = droppable
    if native:
        extras["native_only"] = native
    return GenRequest(
        model=model,
        messages=messages,
        system=system,
        tools=tools,
        tool_choice=choice,
        max_output_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop=stops,
        reasoning=_thinking(body.get("thinking")),
        stream=stream is True,
        user=user,
        extras={"anthropic_messages": extras} if extras else {},
    )


class _MessagesCodec:
    name = "anthropic_messages"
    decode_request = staticmethod(decode_request)
    encode_request = staticmethod(encode_request)
    decode_reply = staticmethod(decode_reply)
    encode_reply = staticmethod(encode_reply)

    @staticmethod
    def stream_decoder() -> MessagesStreamDecoder:
        return MessagesStreamDecoder()

    @staticmethod
    def stream_encoder(*, include_usage: bool) -> MessagesStreamEncoder:
        return MessagesStreamEncoder()


CODEC = _MessagesCodec()
