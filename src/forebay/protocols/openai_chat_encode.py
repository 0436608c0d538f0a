"""Canonical requests as Chat Completions bodies (openai_chat.py has the rest).
An assistant turn's signed reasoning goes back by openai_chat_reasoning.py's
conventions (a call's Gemini signature on the call, other signed thinking in
`thinking_blocks`); its readable reasoning does not, as before."""

from __future__ import annotations

from typing import Any

from forebay.protocols.canonical import (
    AudioPart,
    FilePart,
    GenRequest,
    ImagePart,
    OutputFormat,
    Part,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from forebay.protocols.openai_chat_reasoning import extra_content, reply_reasoning
from forebay.protocols.values import data_url

# ---------------------------------------------------------------- requests out


def _part_out(p: Part) -> dict[str, Any] | None:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if isinstance(p, ImagePart):
        url = p.url or data_url(p.media_type or "image/png", p.data or "")
        image: dict[str, Any] = {"url": url}
        if p.detail:
            image["detail"] = p.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(p, AudioPart):
        return {"type": "input_audio", "input_audio": {"data": p.data, "format": p.format}}
    if isinstance(p, FilePart):
        file: dict[str, Any] = {}
        if p.file_id:
            file["file_id"] = p.file_id
        elif p.data is not None:
            file["file_data"] = data_url(p.media_type or "application/pdf", p.data)
        elif p.url:  # Chat takes no document URL: name it, so the model knows one was there
            return {"type": "text", "text": f"[document: {p.url}]"}
        if p.filename:
            file["filename"] = p.filename
        return {"type": "file", "file": file}
    return None  # tool calls, results and reasoning have places of their own


def _content_out(parts: list[Part]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    return [d for p in parts if (d := _part_out(p)) is not None]


def _messages_out(req: GenRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": "\n\n".join(p.text for p in req.system)})
    for m in req.messages:
        if m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant"}
            text = [p for p in m.parts if isinstance(p, TextPart)]
            msg["content"] = "".join(p.text for p in text) if text else None
            calls = [p for p in m.parts if isinstance(p, ToolCallPart)]
            blocks, signatures = reply_reasoning(m.parts, opaque=True)
            if calls:
                msg["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments or "{}"},
                    }
                    for c in calls
                ]
                for n, sig in signatures.items():
                    msg["tool_calls"][n]["extra_content"] = extra_content(sig)
            if blocks:
                msg["thinking_blocks"] = blocks
            if m.name:
                msg["name"] = m.name
            out.append(msg)
            continue
        # Tool results are messages of their own in Chat, in the order given; what
        # else the turn holds (text, or media a tool message cannot carry) follows.
        rest: list[Part] = []
        for p in m.parts:
            if isinstance(p, ToolResultPart):
                texts = [c.text for c in p.content if isinstance(c, TextPart)]
                out.append({"role": "tool", "tool_call_id": p.call_id, "content": "".join(texts)})
                rest.extend(c for c in p.content if not isinstance(c, TextPart))
            elif not isinstance(p, ReasoningPart | ToolCallPart):
                rest.append(p)
        if rest:
            user: dict[str, Any] = {"role": "user", "content": _content_out(rest)}
            if m.name:
                user["name"] = m.name
            out.append(user)
    return out


def encode_request(req: GenRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": _messages_out(req)}
    if req.tools:
        body["tools"] = [_tool_out(t) for t in req.tools]
    choice = req.tool_choice
    if choice is not None:
        if choice.mode == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif req.tools or choice.mode == "none":
            body["tool_choice"] = choice.mode
        if choice.parallel is not None and req.tools:
            body["parallel_tool_calls"] = choice.parallel
    if req.max_output_tokens is not None:
        # max_tokens: every OpenAI-compatible server takes it (not all the newer name).
        body["max_tokens"] = req.max_output_tokens
    for key in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = req.stop
    if req.output is not None:
        body["response_format"] = _format_out(req.output)
    if req.reasoning is not None and req.reasoning.effort:
        body["reasoning_effort"] = req.reasoning.effort
    if req.user:
        body["user"] = req.user
    if req.stream:
        # The gateway meters from the usage chunk, whatever the client asked.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _tool_out(t: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
    if t.description:
        fn["description"] = t.description
    if t.strict is not None:
        fn["strict"] = t.strict
    return {"type": "function", "function": fn}


def _format_out(f: OutputFormat) -> dict[str, Any]:
    if f.kind != "json_schema":
        return {"type": f.kind}
    spec: dict[str, Any] = {"name": f.name or "output", "schema": f.schema or {}}
    if f.strict is not None:
        spec["strict"] = f.strict
    return {"type": "json_schema", "json_schema": spec}
