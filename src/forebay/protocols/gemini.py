"""Google's Gemini API (`models/{model}:generateContent`), as an upstream.

Clients never speak Gemini to Forebay, so only the upstream half of `Codec` is
here: canonical request -> Gemini body, Gemini reply -> canonical reply, and
the SSE stream decoder (gemini_stream.py).

Wire facts that shape the code:
* Roles are `user` and `model`; tool results are `functionResponse` parts of a
  user turn, and Gemini pairs them with calls by name (and by id, when the
  model gave one). Calls without an id get `call_<n>_<name>`: stable for a
  reply, and its name can be recovered from it.
* A thought signature rides on the part it belongs to (`thoughtSignature`);
  canonically it is a ReasoningPart of its own, placed just before that part,
  so it goes back on the same part.
* `usageMetadata.thoughtsTokenCount` is counted outside `candidatesTokenCount`
  and `toolUsePromptTokenCount` outside `promptTokenCount`; canonical output
  includes reasoning and input includes everything (cached tokens are part of
  `promptTokenCount` already).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from forebay.errors import UpstreamFailure, bad_request
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
from forebay.protocols.option_policy import EFFORT_BUDGET, NO_EFFORT
from forebay.protocols.values import split_data_url
from forebay.protocols.wire_values import (
    args_object,
    as_list,
    as_object,
    as_str,
    count,
    new_id,
)

NAME = "gemini"
_OUR_CALL_ID = re.compile(r"^call_\d+_(.+)$")

# finishReason -> canonical kind; the raw word is always kept.
_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_BROKEN_CALL = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})


class GeminiCodec:
    name = NAME

    def decode_request(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError("gemini is an upstream protocol: clients do not send it")

    def encode_reply(self, reply: GenReply) -> dict[str, Any]:
        raise NotImplementedError("gemini is an upstream protocol: clients are not sent it")

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder:
        raise NotImplementedError("gemini is an upstream protocol: clients are not sent it")

    def encode_request(self, req: GenRequest, model: str) -> dict[str, Any]:
        """The body of generateContent; `model` goes in the URL (the adapter's)."""
        return encode_request(req, model)

    def decode_reply(self, body: dict[str, Any]) -> GenReply:
        return decode_reply(body)

    def stream_decoder(self) -> StreamDecoder:
        from forebay.protocols.gemini_stream import GeminiStreamDecoder

        return GeminiStreamDecoder()


# ---------------------------------------------------------------- request


def encode_request(req: GenRequest, model: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"contents": _contents(req.messages)}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": p.text} for p in req.system]}
    if req.tools:
        decls = []
        for tool in req.tools:
            decl: dict[str, Any] = {"name": tool.name, "parametersJsonSchema": tool.parameters}
            if tool.description:
                decl["description"] = tool.description
            decls.append(decl)
        body["tools"] = [{"functionDeclarations": decls}]
    if req.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(req)}
    config = _generation_config(req, model)
    if config:
        body["generationConfig"] = config
    for key, value in req.extras.get(NAME, {}).items():  # safetySettings, cachedContent, ...
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def _calling_config(req: GenRequest) -> dict[str, Any]:
    choice = req.tool_choice
    assert choice is not None
    if choice.mode == "none":
        return {"mode": "NONE"}
    if choice.mode == "required":
        return {"mode": "ANY"}
    if choice.mode == "tool":
        if not choice.name:
            raise bad_request("tool_choice names no tool", param="tool_choice")
        return {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    return {"mode": "AUTO"}


def _generation_config(req: GenRequest, model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    pairs: tuple[tuple[str, Any], ...] = (
        ("maxOutputTokens", req.max_output_tokens),
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("topK", req.top_k),
        ("seed", req.seed),
        ("presencePenalty", req.presence_penalty),
        ("frequencyPenalty", req.frequency_penalty),
    )
    for key, value in pairs:
        if value is not None:
            config[key] = value
    if req.stop:
        config["stopSequences"] = list(req.stop)
    out = req.output
    if out is not None and out.kind != "text":
        config["responseMimeType"] = "application/json"
        if out.kind == "json_schema" and out.schema is not None:
            config["responseJsonSchema"] = out.schema
    reasoning = req.reasoning
    if reasoning is not None:
        thinking: dict[str, Any] = {}
        if reasoning.budget_tokens is not None:
            thinking["thinkingBudget"] = reasoning.budget_tokens
        elif reasoning.effort:
            thinking.update(_effort(reasoning.effort, model))
        if thinking.get("thinkingBudget") != 0 and reasoning.effort != NO_EFFORT:
            thinking["includeThoughts"] = True  # the client asked to see reasoning
        config["thinkingConfig"] = thinking
    return config


def _effort(effort: str, model: str) -> dict[str, Any]:
    """OpenAI's reasoning effort as Gemini's control: `thinkingLevel` on Gemini 3
    (Flash takes minimal / low / medium / high, Pro only low / high, and neither
    can stop thinking), `thinkingBudget` tokens before it (0: no thinking). An
    effort that is not OpenAI's sets nothing (option_policy announces it dropped)."""
    if "gemini-3" in model:
        if "flash" in model:
            level = {"none": "minimal", "xhigh": "high"}.get(effort, effort)
        else:
            level = "low" if effort in ("none", "minimal", "low") else "high"
        known = effort == NO_EFFORT or effort in EFFORT_BUDGET
        return {"thinkingLevel": level} if known else {}
    if effort == NO_EFFORT:
        return {"thinkingBudget": 0}
    budget = EFFORT_BUDGET.get(effort)
    return {} if budget is None else {"thinkingBudget": budget}


def _contents(messages: list[Message]) -> list[dict[str, Any]]:
    names = {
        p.id: p.name for m in messages for p in m.parts if isinstance(p, ToolCallPart)
    }  # a result names its call by id; Gemini wants the function's name
    contents: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = "model" if msg.role == "assistant" else "user"
        parts = _parts(msg.parts, names, where=f"messages[{i}]")
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)  # parallel tool results: one turn
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _parts(parts: list[Part], names: dict[str, str], *, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    signature: str | None = None  # a bare signature belongs to the part after it
    for part in parts:
        if isinstance(part, ReasoningPart) and not part.text:
            if part.signature or part.redacted:  # redacted: via Responses encrypted_content
                signature = part.signature or part.redacted
            continue
        wire = _part(part, names, where=where)
        if signature is not None:
            wire["thoughtSignature"] = signature
            signature = None
        out.append(wire)
    if signature is not None and out:
        out[-1].setdefault("thoughtSignature", signature)
    return out


def _part(part: Part, names: dict[str, str], *, where: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart | FilePart):
        return _media(part, where)
    if isinstance(part, AudioPart):
        return {"inlineData": {"mimeType": f"audio/{part.format}", "data": part.data}}
    if isinstance(part, ToolCallPart):
        call: dict[str, Any] = {
            "name": part.name,
            "args": args_object(part.arguments, param=where),
        }
        if part.id and not _OUR_CALL_ID.match(part.id):
            call["id"] = part.id  # Gemini's own id goes back; ours it never saw
        return {"functionCall": call}
    if isinstance(part, ToolResultPart):
        return {"functionResponse": _function_response(part, names, where)}
    assert isinstance(part, ReasoningPart)
    wire: dict[str, Any] = {"text": part.text, "thought": True}
    if part.signature or part.redacted:
        wire["thoughtSignature"] = part.signature or part.redacted
    return wire


def _media(part: ImagePart | FilePart, where: str) -> dict[str, Any]:
    mime = part.media_type
    if part.data is not None:
        return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": part.data}}
    uri = part.url or (part.file_id if isinstance(part, FilePart) else None)
    if not uri:
        raise bad_request("a media part has neither data nor a URL", param=where)
    inline_type, inline = split_data_url(uri)
    if inline is not None:
        return {"inlineData": {"mimeType": inline_type or mime or "image/png", "data": inline}}
    file_data: dict[str, Any] = {"fileUri": uri}
    if mime:
        file_data["mimeType"] = mime
    return {"fileData": file_data}


def _function_response(part: ToolResultPart, names: dict[str, str], where: str) -> dict[str, Any]:
    name = names.get(part.call_id)
    ours = _OUR_CALL_ID.match(part.call_id)
    if name is None and ours:
        name = ours.group(1)
    if name is None:
        raise bad_request(
            f"tool result {part.call_id!r} answers no tool call in the conversation; Gemini "
            "needs the function's name, so send the assistant turn that made the call",
            param=where,
        )
    text = "".join(p.text for p in part.content if isinstance(p, TextPart))
    resp: dict[str, Any] = {
        "name": name,
        "response": {"error": text} if part.is_error else {"output": text},
    }
    media = [_media(p, where) for p in part.content if not isinstance(p, TextPart)]
    if media:
        resp["parts"] = media
    if not ours:
        resp["id"] = part.call_id
    return resp


# ---------------------------------------------------------------- reply


def decode_reply(body: dict[str, Any]) -> GenReply:
    body = as_object(body, "reply")
    if "error" in body:
        raise UpstreamFailure("protocol", "the upstream answered 200 with an error body")
    usage = decode_usage(body.get("usageMetadata"))
    candidates = as_list(body.get("candidates"))
    reply_id = as_str(body.get("responseId")) or new_id("gemini")
    model = as_str(body.get("modelVersion"))
    if not candidates:
        stop = blocked(body) or StopReason(Stop.OTHER, raw="NO_CANDIDATES")
        return GenReply(reply_id, model, [], stop, usage)
    cand = as_object(candidates[0], "candidate")
    content = cand.get("content")
    wire_parts = as_list(content.get("parts")) if isinstance(content, dict) else []
    parts: list[Part] = []
    calls = 0
    for raw in wire_parts:
        for part in decode_part(as_object(raw, "part"), calls):
            if isinstance(part, ToolCallPart):
                calls += 1
            if isinstance(part, TextPart) and parts and isinstance(parts[-1], TextPart):
                parts[-1].text += part.text  # Gemini may split text anyhow
            else:
                parts.append(part)
    stop = finish(cand.get("finishReason"), calls) or blocked(body) or StopReason(Stop.END)
    return GenReply(reply_id, model, parts, stop, usage)


def decode_part(raw: dict[str, Any], calls: int) -> list[Part]:
    """One wire part as canonical parts: its signature first, if it carries one
    and is not itself a thought (`calls`: tool calls seen so far, for ids)."""
    signature = raw.get("thoughtSignature")
    sig = signature if isinstance(signature, str) and signature else None
    if raw.get("thought") is True:
        return [ReasoningPart(text=as_str(raw.get("text")), signature=sig)]
    lead: list[Part] = [ReasoningPart(signature=sig)] if sig else []
    call = raw.get("functionCall")
    if isinstance(call, dict):
        name = as_str(call.get("name"))
        call_id = as_str(call.get("id")) or f"call_{calls}_{name}"
        args = call.get("args")
        arguments = orjson.dumps(args if isinstance(args, dict) else {}).decode()
        return [*lead, ToolCallPart(call_id, name, arguments)]
    if isinstance(raw.get("text"), str):
        return [*lead, TextPart(raw["text"])]
    inline = raw.get("inlineData")
    if isinstance(inline, dict):  # a generated image
        image = ImagePart(
            data=as_str(inline.get("data")), media_type=as_str(inline.get("mimeType"))
        )
        return [*lead, image]
    return lead  # executableCode and the like: nothing canonical


def finish(reason: Any, calls: int) -> StopReason | None:
    if not isinstance(reason, str) or not reason:
        return None
    if reason == "STOP":
        return StopReason(Stop.TOOL_CALLS if calls else Stop.END, raw=reason)
    if reason == "MAX_TOKENS":
        return StopReason(Stop.MAX_TOKENS, raw=reason)
    if reason in _FILTERED:
        return StopReason(Stop.CONTENT_FILTER, raw=reason)
    if reason in _BROKEN_CALL:
        return StopReason(Stop.ERROR, raw=reason)
    return StopReason(Stop.OTHER, raw=reason)


def blocked(body: dict[str, Any]) -> StopReason | None:
    """The prompt itself was refused (`promptFeedback.blockReason`)."""
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if isinstance(reason, str) and reason:
        return StopReason(Stop.CONTENT_FILTER, raw=reason)
    return None


def decode_usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    thoughts = count(meta.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=count(meta.get("promptTokenCount"))
        + count(meta.get("toolUsePromptTokenCount")),
        output_tokens=count(meta.get("candidatesTokenCount")) + thoughts,
        cache_read_tokens=count(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


CODEC = GeminiCodec()
