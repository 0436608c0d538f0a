"""Canonical requests as Anthropic Messages bodies (anthropic_messages.py has the rest)."""

from __future__ import annotations

from typing import Any

from forebay.errors import bad_request
from forebay.protocols.anthropic_reply import tool_input
from forebay.protocols.canonical import (
    AudioPart,
    FilePart,
    GenRequest,
    ImagePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from forebay.protocols.option_policy import anthropic_max_tokens, thinking_budget
from forebay.protocols.values import split_data_url

# ---------------------------------------------------------------- requests out


def _part_out(p: Part) -> dict[str, Any] | None:
    block: dict[str, Any]
    source: dict[str, Any]
    if isinstance(p, TextPart):
        block = {"type": "text", "text": p.text}
    elif isinstance(p, ImagePart):
        media, data = (p.media_type, p.data) if p.data is not None else split_data_url(p.url or "")
        if data is not None:
            source = {"type": "base64", "media_type": media or "image/png", "data": data}
        else:
            source = {"type": "url", "url": p.url}
        block = {"type": "image", "source": source}
    elif isinstance(p, FilePart):
        if p.file_id:
            source = {"type": "file", "file_id": p.file_id}
        elif p.data is not None:
            media = p.media_type or "application/pdf"
            source = {"type": "base64", "media_type": media, "data": p.data}
        else:
            source = {"type": "url", "url": p.url}
        block = {"type": "document", "source": source}
        if p.filename:
            block["title"] = p.filename
    elif isinstance(p, AudioPart):
        raise bad_request(
            "This model's deployment speaks Anthropic Messages, which takes no audio input; "
            "send text, images or documents.",
            code="unsupported_content",
        )
    elif isinstance(p, ToolCallPart):
        block = {"type": "tool_use", "id": p.id, "name": p.name, "input": tool_input(p.arguments)}
    elif isinstance(p, ToolResultPart):
        inner = [b for c in p.content if (b := _part_out(c)) is not None]
        block = {"type": "tool_result", "tool_use_id": p.call_id, "content": inner}
        if p.is_error:
            block["is_error"] = True
    elif isinstance(p, ReasoningPart):
        if p.redacted is not None and not p.text:
            return {"type": "redacted_thinking", "data": p.redacted}
        signature = p.signature or p.redacted  # thinking back from Responses encrypted_content
        if signature is None:
            return None  # unsigned reasoning (another provider's): Anthropic refuses it
        return {"type": "thinking", "thinking": p.text, "signature": signature}
    cache = getattr(p, "cache_control", None)
    if cache is not None:
        block["cache_control"] = cache
    return block


def _messages_out(req: GenRequest) -> list[dict[str, Any]]:
    """Tool results travel in user turns; turns of one role in a row are merged."""
    out: list[dict[str, Any]] = []
    for m in req.messages:
        role = "assistant" if m.role == "assistant" else "user"
        blocks = [b for p in m.parts if (b := _part_out(p)) is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def encode_request(req: GenRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": anthropic_max_tokens(req),
        "messages": _messages_out(req),
    }
    if req.system:
        body["system"] = [_part_out(p) for p in req.system]
    tools: list[dict[str, Any]] = []
    for t in req.tools:
        tool: dict[str, Any] = {"name": t.name, "input_schema": t.parameters}
        if t.description:
            tool["description"] = t.description
        if t.cache_control is not None:
            tool["cache_control"] = t.cache_control
        tools.append(tool)
    tools.extend(req.extras.get("anthropic_messages", {}).get("server_tools", ()))
    if tools:
        body["tools"] = tools
    c = req.tool_choice
    if c is not None and (tools or c.mode == "none"):
        mode = {"auto": "auto", "required": "any", "tool": "tool", "none": "none"}[c.mode]
        choice: dict[str, Any] = {"type": mode}
        if c.mode == "tool":
            choice["name"] = c.name
        if c.parallel is not None and c.mode != "none":
            choice["disable_parallel_tool_use"] = not c.parallel
        body["tool_choice"] = choice
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)  # Chat's range runs to 2
    for key in ("top_p", "top_k"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop_sequences"] = req.stop
    reasoning = req.reasoning
    if reasoning is not None and reasoning.budget_tokens:
        body["thinking"] = {"type": "enabled", "budget_tokens": reasoning.budget_tokens}
    elif reasoning is not None and reasoning.effort:  # OpenAI's effort (option_policy.py)
        budget = thinking_budget(reasoning.effort, body["max_tokens"])
        if budget is not None:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body
