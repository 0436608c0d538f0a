"""OpenAI Responses items <-> canonical parts: input items in, output items out.

An `Item` is one Responses item in canonical terms (a message, a function call,
its output, a reasoning item): what the Responses API lists, pages and stores
one at a time. `to_messages` merges items into canonical messages (consecutive
assistant items are one assistant turn; consecutive function outputs one tool
message); system and developer messages become the request's system text, in
order. Hosted-tool items (web search, file search, computer use, MCP...) have
no canonical form and are refused by name.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from forebay.errors import bad_request
from forebay.protocols.canonical import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from forebay.protocols.values import data_url, opt_opaque, split_data_url

ItemRole = Literal["user", "assistant", "tool", "system", "developer"]
ROLES = ("user", "assistant", "system", "developer")
MAX_ITEMS = 10_000  # items in one input: far past any context window

# Item types of the Responses API that only OpenAI's own hosted tools produce.
HOSTED_ITEMS = frozenset(
    {
        "file_search_call",
        "web_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "tool_search_call",
        "tool_search_output",
        "additional_tools",
        "compaction",
        "program",
        "program_output",
    }
)


@dataclass(slots=True)
class Item:
    role: ItemRole
    parts: list[Part]
    id: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _prefix(item: Item) -> str:
    first = item.parts[0] if item.parts else None
    if isinstance(first, ToolCallPart):
        return "fc"
    if isinstance(first, ToolResultPart):
        return "fco"
    if isinstance(first, ReasoningPart):
        return "rs"
    return "msg"


def with_ids(items: Iterable[Item]) -> list[Item]:
    """Every item with an id (the client's, else a new one), as listed later."""
    out = []
    for item in items:
        if item.id is None:
            item.id = new_id(_prefix(item))
        out.append(item)
    return out


# ---------------------------------------------------------------- decode


def _text(obj: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{where}.{key} must be a string.", param=f"{where}.{key}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be an object.", param=where)
    return value


def decode_content(part: Any, where: str) -> Part:
    p = _object(part, where)
    kind = p.get("type")
    if kind in ("input_text", "output_text"):
        return TextPart(_text(p, "text", where) or "")
    if kind == "refusal":
        return TextPart(_text(p, "refusal", where) or "")
    if kind == "input_image":
        url = _text(p, "image_url", where, required=False)
        file_id = _text(p, "file_id", where, required=False)
        detail = _text(p, "detail", where, required=False)
        if url is None and file_id is None:
            raise bad_request(f"{where} needs image_url or file_id.", param=where)
        media, data = split_data_url(url or "")
        if data is not None:
            return ImagePart(data=data, media_type=media, detail=detail)
        return ImagePart(url=url, detail=detail, file_id=file_id)
    if kind == "input_file":
        data = _text(p, "file_data", where, required=False)
        file = FilePart(
            file_id=_text(p, "file_id", where, required=False),
            url=_text(p, "file_url", where, required=False),
            filename=_text(p, "filename", where, required=False),
        )
        if data is not None:
            media, inline = split_data_url(data)
            file.media_type, file.data = (media, inline) if inline is not None else (None, data)
        if file.data is None and file.file_id is None and file.url is None:
            raise bad_request(f"{where} needs file_id, file_data or file_url.", param=where)
        return file
    if kind == "input_audio":
        audio = _object(p.get("input_audio"), f"{where}.input_audio")
        return AudioPart(
            _text(audio, "data", f"{where}.input_audio") or "",
            _text(audio, "format", f"{where}.input_audio") or "",
        )
    raise bad_request(
        f"{where}.type {str(kind)[:40]!r} is not a content part Forebay knows "
        "(input_text, input_image, input_file, input_audio, output_text, refusal).",
        param=f"{where}.type",
    )


def _message(raw: dict[str, Any], where: str) -> Item:
    role = raw.get("role")
    if role not in ROLES:
        raise bad_request(
            f"{where}.role must be one of user, assistant, system, developer.",
            param=f"{where}.role",
        )
    content = raw.get("content")
    if isinstance(content, str):
        parts: list[Part] = [TextPart(content)]
    elif isinstance(content, list):
        parts = [decode_content(c, f"{where}.content[{j}]") for j, c in enumerate(content)]
    else:
        raise bad_request(f"{where}.content must be a string or a list.", param=f"{where}.content")
    if role in ("system", "developer") and not all(isinstance(p, TextPart) for p in parts):
        raise bad_request(f"A {role} message may only hold text.", param=f"{where}.content")
    return Item(role, parts, _text(raw, "id", where, required=False))


def _reasoning(raw: dict[str, Any], where: str) -> Item:
    texts = []
    for key in ("summary", "content"):
        value = raw.get(key) or []
        if not isinstance(value, list):
            raise bad_request(f"{where}.{key} must be a list.", param=f"{where}.{key}")
        for j, s in enumerate(value):
            texts.append(_text(_object(s, f"{where}.{key}[{j}]"), "text", f"{where}.{key}[{j}]"))
        if texts:
            break  # the summary, else the raw reasoning text (open-weight models)
    rid = _text(raw, "id", where, required=False)
    encrypted = opt_opaque(raw.get("encrypted_content"), f"{where}.encrypted_content")
    return Item(
        "assistant", [ReasoningPart("\n\n".join(t or "" for t in texts), None, encrypted, rid)], rid
    )


def decode_item(raw: Any, where: str) -> Item:
    item = _object(raw, where)
    kind = item.get("type", "message")
    if kind == "message":
        return _message(item, where)
    if kind == "function_call":
        call = ToolCallPart(
            _text(item, "call_id", where) or "",
            _text(item, "name", where) or "",
            _text(item, "arguments", where) or "",
        )
        return Item("assistant", [call], _text(item, "id", where, required=False))
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, str):
            content: list[Part] = [TextPart(output)]
        elif isinstance(output, list):
            content = [decode_content(c, f"{where}.output[{j}]") for j, c in enumerate(output)]
        else:
            raise bad_request(
                f"{where}.output must be a string or a list.", param=f"{where}.output"
            )
        result = ToolResultPart(_text(item, "call_id", where) or "", content)  # type: ignore[arg-type]
        if any(isinstance(c, AudioPart) for c in content):
            raise bad_request(f"{where}.output may not hold audio.", param=f"{where}.output")
        return Item("tool", [result], _text(item, "id", where, required=False))
    if kind == "reasoning":
        return _reasoning(item, where)
    if kind == "item_reference":
        raise bad_request(
            f"{where}: item_reference is not supported; continue a conversation with "
            "previous_response_id, or send the items themselves.",
            param=where,
        )
    if kind in HOSTED_ITEMS:
        raise bad_request(
            f"{where}: {kind} items belong to OpenAI's hosted tools, which Forebay cannot "
            "carry; send function_call and function_call_output items instead.",
            param=f"{where}.type",
        )
    raise bad_request(
        f"{where}.type {str(kind)[:40]!r} is not a Responses input item type.",
        param=f"{where}.type",
    )


def decode_input(value: Any, where: str = "input") -> list[Item]:
    if isinstance(value, str):
        return [Item("user", [TextPart(value)])]
    if not isinstance(value, list):
        raise bad_request("input must be a string or a list of items.", param=where)
    if len(value) > MAX_ITEMS:
        raise bad_request(f"input holds more than {MAX_ITEMS} items.", param=where)
    return [decode_item(raw, f"{where}[{i}]") for i, raw in enumerate(value)]


def to_messages(items: Iterable[Item]) -> tuple[list[TextPart], list[Message]]:
    system: list[TextPart] = []
    messages: list[Message] = []
    for item in items:
        if item.role in ("system", "developer"):
            system.extend(p for p in item.parts if isinstance(p, TextPart))
            continue
        last = messages[-1] if messages else None
        if last is not None and item.role in ("assistant", "tool") and last.role == item.role:
            last.parts.extend(item.parts)
        else:
            messages.append(Message(item.role, list(item.parts)))  # type: ignore[arg-type]
    return system, messages


# ---------------------------------------------------------------- encode


def from_messages(messages: Iterable[Message]) -> list[Item]:
    """Canonical messages split into Responses-sized items: each tool call,
    tool result and reasoning part its own item, runs of content one message."""
    items: list[Item] = []
    for m in messages:
        run: list[Part] = []
        for p in m.parts:
            if isinstance(p, ToolCallPart | ReasoningPart):
                role: ItemRole = "assistant"
            elif isinstance(p, ToolResultPart):
                role = "tool"
            else:
                run.append(p)
                continue
            if run:
                items.append(Item(m.role, run))
                run = []
            items.append(Item(role, [p]))
        if run:
            items.append(Item(m.role, run))
    return items


def encode_content(part: Part, *, output: bool) -> dict[str, Any]:
    if isinstance(part, TextPart):
        if output:
            return {"type": "output_text", "text": part.text, "annotations": []}
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        url = part.url
        if part.data is not None:
            url = data_url(part.media_type or "image/png", part.data)
        image: dict[str, Any] = {"type": "input_image", "detail": part.detail or "auto"}
        if url is not None:
            image["image_url"] = url
        if part.file_id is not None:
            image["file_id"] = part.file_id
        return image
    if isinstance(part, FilePart):
        out: dict[str, Any] = {"type": "input_file"}
        if part.data is not None:
            out["file_data"] = data_url(part.media_type or "application/pdf", part.data)
        for key, value in (
            ("file_id", part.file_id),
            ("file_url", part.url),
            ("filename", part.filename),
        ):
            if value is not None:
                out[key] = value
        return out
    if isinstance(part, AudioPart):
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": part.format}}
    raise ValueError(f"{type(part).__name__} is not message content")


def encode_item(item: Item, *, listed: bool) -> dict[str, Any]:
    """One item as a request's input (`listed` False: no ids Forebay minted,
    which an upstream would not know) or as the API lists it (ids, status)."""
    first = item.parts[0]
    out: dict[str, Any]
    if isinstance(first, ToolCallPart):
        out = {
            "type": "function_call",
            "call_id": first.id,
            "name": first.name,
            "arguments": first.arguments,
        }
    elif isinstance(first, ToolResultPart):
        content = first.content
        if len(content) == 1 and isinstance(content[0], TextPart):
            output: Any = content[0].text
        else:
            output = [encode_content(c, output=False) for c in content]
        out = {"type": "function_call_output", "call_id": first.call_id, "output": output}
    elif isinstance(first, ReasoningPart):
        summary = [{"type": "summary_text", "text": first.text}] if first.text else []
        out = {"type": "reasoning", "id": first.id or item.id, "summary": summary}
        opaque = first.redacted if first.redacted is not None else first.signature
        if opaque is not None:
            out["encrypted_content"] = opaque
        return out
    elif item.role == "assistant":
        if not listed:
            text = "".join(p.text for p in item.parts if isinstance(p, TextPart))
            return {"type": "message", "role": "assistant", "content": text}
        texts = [encode_content(p, output=True) for p in item.parts if isinstance(p, TextPart)]
        return {
            "type": "message",
            "id": item.id,
            "role": "assistant",
            "status": "completed",
            "content": texts,
        }
    else:
        out = {
            "type": "message",
            "role": item.role,
            "content": [encode_content(p, output=False) for p in item.parts],
        }
    if listed:
        out["id"] = item.id
        out["status"] = "completed"
    return out
