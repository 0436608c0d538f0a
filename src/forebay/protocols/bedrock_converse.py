"""Amazon Bedrock's Converse API (`/model/{modelId}/converse`), as an upstream.

Only the upstream half of `Codec`: canonical request -> Converse body, Converse
reply -> canonical reply, and the ConverseStream decoder (bedrock_stream.py),
which reads AWS event-stream frames.

Wire facts that shape the code:
* Roles must alternate user / assistant, so tool results (canonical role
  "tool") join the user turn, and consecutive turns of one role are merged.
* Media is inline bytes (base64 in JSON) or an S3 location, never a web URL.
* `usage.inputTokens` counts only the uncached input: cache reads and writes
  are added to canonical input, which counts all of it.
* A Converse reply carries no id and no model name; the id is made here, the
  model is left empty for the gateway, which knows the deployment.
* Anthropic `cache_control` marks become `cachePoint` blocks after their part.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from forebay.errors import bad_request
from forebay.protocols.canonical import (
    AudioPart,
    FilePart,
    GenReply,
    GenRequest,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    Stop,
    StopReason,
    StreamDecoder,
    StreamEncoder,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from forebay.protocols.option_policy import is_claude, thinking_budget
from forebay.protocols.values import split_data_url
from forebay.protocols.wire_values import (
    args_object,
    as_list,
    as_object,
    as_str,
    count,
    new_id,
)

NAME = "bedrock_converse"
_CACHE_POINT = {"cachePoint": {"type": "default"}}
_IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_DOC_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_DOC_NAME_JUNK = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")
_STOPS = {
    "end_turn": Stop.END,
    "tool_use": Stop.TOOL_CALLS,
    "max_tokens": Stop.MAX_TOKENS,
    "stop_sequence": Stop.STOP_SEQUENCE,
    "guardrail_intervened": Stop.CONTENT_FILTER,
    "content_filtered": Stop.CONTENT_FILTER,
    "malformed_model_output": Stop.ERROR,
    "malformed_tool_use": Stop.ERROR,
    "model_context_window_exceeded": Stop.CONTEXT_WINDOW,
}


class BedrockConverseCodec:
    name = NAME

    def decode_request(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError(
            "bedrock_converse is an upstream protocol: clients do not send it"
        )

    def encode_reply(self, reply: GenReply) -> dict[str, Any]:
        raise NotImplementedError(
            "bedrock_converse is an upstream protocol: clients get no such reply"
        )

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder:
        raise NotImplementedError(
            "bedrock_converse is an upstream protocol: clients get no such stream"
        )

    def encode_request(self, req: GenRequest, model: str) -> dict[str, Any]:
        """The Converse body; `model` goes in the URL (the adapter's)."""
        return encode_request(req, model)

    def decode_reply(self, body: dict[str, Any]) -> GenReply:
        return decode_reply(body)

    def stream_decoder(self) -> StreamDecoder:
        from forebay.protocols.bedrock_stream import ConverseStreamDecoder

        return ConverseStreamDecoder()


# ---------------------------------------------------------------- request


def encode_request(req: GenRequest, model: str = "") -> dict[str, Any]:
    """The Converse body. Converse has no seed, penalties nor JSON-object mode:
    option_policy.py drops (and announces) the first and refuses the last;
    a reasoning effort becomes Anthropic models' `thinking` budget."""
    messages = _messages(req.messages)
    body: dict[str, Any] = {"messages": messages}
    if req.system:
        system: list[dict[str, Any]] = []
        for part in req.system:
            system.append({"text": part.text})
            if part.cache_control:
                system.append(_CACHE_POINT)
        body["system"] = system
    inference: dict[str, Any] = {}
    for key, value in (
        ("maxTokens", req.max_output_tokens),
        ("temperature", req.temperature),
        ("topP", req.top_p),
    ):
        if value is not None:
            inference[key] = value
    if req.stop:
        inference["stopSequences"] = list(req.stop)
    if inference:
        body["inferenceConfig"] = inference
    tools = _tool_config(req, messages)
    if tools is not None:
        body["toolConfig"] = tools
    additional: dict[str, Any] = {}
    if req.top_k is not None:
        additional["top_k"] = req.top_k
    reasoning = req.reasoning
    if reasoning is not None and reasoning.budget_tokens:
        additional["thinking"] = {"type": "enabled", "budget_tokens": reasoning.budget_tokens}
    elif reasoning is not None and reasoning.effort and is_claude(model):
        budget = thinking_budget(reasoning.effort, req.max_output_tokens)
        if budget is not None:
            additional["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if additional:
        body["additionalModelRequestFields"] = additional
    out = req.output
    if out is not None and out.kind == "json_schema" and out.schema is not None:
        schema: dict[str, Any] = {"schema": orjson.dumps(out.schema).decode()}
        if out.name:
            schema["name"] = out.name
        body["outputConfig"] = {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}
        }
    for key, value in req.extras.get(NAME, {}).items():  # guardrailConfig, serviceTier, ...
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def _tool_config(req: GenRequest, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not req.tools:
        return None
    choice = req.tool_choice
    uses_tools = any(
        "toolUse" in block or "toolResult" in block for m in messages for block in m["content"]
    )
    if choice is not None and choice.mode == "none" and not uses_tools:
        return None  # Converse has no "none": offer no tools (it needs them if blocks use them)
    tools: list[dict[str, Any]] = []
    for tool in req.tools:
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
        if tool.description:
            spec["description"] = tool.description
        if tool.strict is not None:
            spec["strict"] = tool.strict
        tools.append({"toolSpec": spec})
        if tool.cache_control:
            tools.append(_CACHE_POINT)
    config: dict[str, Any] = {"tools": tools}
    if choice is not None and choice.mode == "required":
        config["toolChoice"] = {"any": {}}
    elif choice is not None and choice.mode == "tool":
        if not choice.name:
            raise bad_request("tool_choice names no tool", param="tool_choice")
        config["toolChoice"] = {"tool": {"name": choice.name}}
    elif choice is not None and choice.mode == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = "assistant" if msg.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        for part in msg.parts:
            blocks.append(_block(part, where=f"messages[{i}]"))
            if getattr(part, "cache_control", None):
                blocks.append(_CACHE_POINT)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _block(part: Part, *, where: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart):
        return {"image": _image(part, where)}
    if isinstance(part, FilePart):
        return {"document": _document(part, where)}
    if isinstance(part, AudioPart):
        return {"audio": {"format": part.format, "source": {"bytes": part.data}}}
    if isinstance(part, ToolCallPart):
        use = {
            "toolUseId": part.id,
            "name": part.name,
            "input": args_object(part.arguments, param=where),
        }
        return {"toolUse": use}
    if isinstance(part, ToolResultPart):
        content: list[dict[str, Any]] = []
        for item in part.content:
            if isinstance(item, TextPart):
                content.append({"text": item.text})
            elif isinstance(item, ImagePart):
                content.append({"image": _image(item, where)})
            else:
                content.append({"document": _document(item, where)})
        result: dict[str, Any] = {"toolUseId": part.call_id, "content": content or [{"text": ""}]}
        if part.is_error:
            result["status"] = "error"
        return {"toolResult": result}
    assert isinstance(part, ReasoningPart)
    if part.redacted is not None and not part.text:
        return {"reasoningContent": {"redactedContent": part.redacted}}
    text: dict[str, Any] = {"text": part.text}
    signature = part.signature or part.redacted  # redacted: via Responses encrypted_content
    if signature:
        text["signature"] = signature
    return {"reasoningContent": {"reasoningText": text}}


def _source(url: str | None, data: str | None, where: str) -> tuple[dict[str, Any], str | None]:
    """The Converse `source` and the media type a data URL names."""
    if data is not None:
        return {"bytes": data}, None
    if url and url.startswith("s3://"):
        return {"s3Location": {"uri": url}}, None
    media, inline = split_data_url(url or "")
    if inline is not None:
        return {"bytes": inline}, media
    raise bad_request(
        "Bedrock takes images and documents inline (base64 or a data: URL) or from S3 "
        "(s3://...), not from a web URL",
        param=where,
    )


def _image(part: ImagePart, where: str) -> dict[str, Any]:
    source, media = _source(part.url, part.data, where)
    fmt = (part.media_type or media or "").removeprefix("image/").replace("jpg", "jpeg")
    if fmt not in _IMAGE_FORMATS:
        raise bad_request(
            f"Bedrock takes png, jpeg, gif or webp images, not {fmt or 'an unnamed type'!r}",
            param=where,
        )
    return {"format": fmt, "source": source}


def _document(part: FilePart | ImagePart, where: str) -> dict[str, Any]:
    url = part.url if isinstance(part, ImagePart) else (part.url or part.file_id)
    source, media = _source(url, part.data, where)
    name = part.filename if isinstance(part, FilePart) else None
    fmt = _DOC_FORMATS.get(part.media_type or media or "")
    if fmt is None and name and "." in name:
        fmt = name.rsplit(".", 1)[1].lower()
        fmt = fmt if fmt in _DOC_FORMATS.values() else None
    if fmt is None:
        raise bad_request(
            "Bedrock takes pdf, csv, doc, docx, xls, xlsx, html, txt or md documents; "
            "this one names no such type",
            param=where,
        )
    # Names allow letters, digits, single spaces, hyphens, parentheses and brackets.
    stem = (name or "").rsplit(".", 1)[0]
    clean = " ".join(_DOC_NAME_JUNK.sub(" ", stem).split())[:200] or "document"
    return {"format": fmt, "name": clean, "source": source}


# ---------------------------------------------------------------- reply


def decode_reply(body: dict[str, Any]) -> GenReply:
    body = as_object(body, "reply")
    output = as_object(body.get("output"), "output")
    message = output.get("message")
    blocks = as_list(message.get("content")) if isinstance(message, dict) else []
    parts: list[Part] = []
    for raw in blocks:
        part = _reply_part(as_object(raw, "content block"))
        if part is not None:
            parts.append(part)
    return GenReply(
        new_id("bedrock"),
        "",
        parts,
        stop_reason(body.get("stopReason")),
        decode_usage(body.get("usage")),
    )


def _reply_part(block: dict[str, Any]) -> Part | None:
    if isinstance(block.get("text"), str):
        return TextPart(block["text"])
    use = block.get("toolUse")
    if isinstance(use, dict):
        args = use.get("input")
        arguments = orjson.dumps(args if args is not None else {}).decode()
        return ToolCallPart(as_str(use.get("toolUseId")), as_str(use.get("name")), arguments)
    reasoning = block.get("reasoningContent")
    if isinstance(reasoning, dict):
        text = reasoning.get("reasoningText")
        if isinstance(text, dict):
            sig = as_str(text.get("signature")) or None
            return ReasoningPart(text=as_str(text.get("text")), signature=sig)
        if isinstance(reasoning.get("redactedContent"), str):
            return ReasoningPart(redacted=reasoning["redactedContent"])
    return None  # citations, guard content, images: nothing canonical


def stop_reason(raw: Any) -> StopReason:
    word = as_str(raw)
    return StopReason(_STOPS.get(word, Stop.OTHER), raw=word or None)


def decode_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    read = count(raw.get("cacheReadInputTokens"))
    write = count(raw.get("cacheWriteInputTokens"))
    return Usage(
        input_tokens=count(raw.get("inputTokens")) + read + write,
        output_tokens=count(raw.get("outputTokens")),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


CODEC = BedrockConverseCodec()
