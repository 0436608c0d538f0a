"""OpenAI Chat Completions <-> canonical, for vLLM, SGLang, llama.cpp, Ollama,
TGI, OpenAI itself and the embedded model. The stream half is in
openai_chat_stream.py.

Chat has no place for a few canonical things, and the encoder drops them
rather than invent one: readable reasoning in the prompt (the model's own; no
Chat server takes it back), cache_control marks, a thinking budget. Signed
reasoning (Gemini thought signatures, Anthropic and Bedrock thinking) travels
by the conventions in openai_chat_reasoning.py, both ways on both sides: to
and from Chat clients, and to and from Chat upstreams (Gemini's
OpenAI-compatibility endpoint rejects a function call sent back without its
signature).
"""

from __future__ import annotations

from typing import Any

from forebay.errors import UpstreamFailure, bad_request
from forebay.protocols.canonical import (
    AudioPart,
    FilePart,
    GenReply,
    GenRequest,
    ImagePart,
    Message,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningPart,
    Stop,
    StopReason,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from forebay.protocols.openai_chat_encode import encode_request
from forebay.protocols.openai_chat_reasoning import (
    decode_blocks,
    decode_call_signature,
    extra_content,
    read_blocks,
    read_call_signature,
    reply_reasoning,
)
from forebay.protocols.openai_chat_stream import ChatStreamDecoder, ChatStreamEncoder
from forebay.protocols.openai_chat_terms import finish_reason, stop_of, usage_body, usage_of
from forebay.protocols.values import (
    as_dict,
    as_list,
    opt_bool,
    opt_int,
    opt_number,
    opt_str,
    split_data_url,
)

# ---------------------------------------------------------------- requests in


def _part(p: Any, where: str) -> Part:
    kind = p.get("type") if isinstance(p, dict) else None
    if kind == "text":
        return TextPart(opt_str(p.get("text"), f"{where}.text") or "")
    if kind == "refusal":
        return TextPart(opt_str(p.get("refusal"), f"{where}.refusal") or "")
    if kind == "image_url":
        image = as_dict(p.get("image_url"))
        url = opt_str(image.get("url"), f"{where}.image_url.url")
        if not url:
            raise bad_request(f"{where}.image_url.url is required.", param=where)
        media, data = split_data_url(url)
        detail = opt_str(image.get("detail"), f"{where}.image_url.detail")
        if data is not None:
            return ImagePart(data=data, media_type=media, detail=detail)
        return ImagePart(url=url, detail=detail)
    if kind == "input_audio":
        audio = as_dict(p.get("input_audio"))
        return AudioPart(
            data=opt_str(audio.get("data"), f"{where}.input_audio.data") or "",
            format=opt_str(audio.get("format"), f"{where}.input_audio.format") or "wav",
        )
    if kind == "file":
        file = as_dict(p.get("file"))
        media, data = split_data_url(opt_str(file.get("file_data"), f"{where}.file") or "")
        return FilePart(
            data=data,
            file_id=opt_str(file.get("file_id"), f"{where}.file.file_id"),
            filename=opt_str(file.get("filename"), f"{where}.file.filename"),
            media_type=media,
        )
    raise bad_request(
        f"{where} has type {str(kind)[:40]!r}; a translated request takes text, image_url, "
        "input_audio and file parts.",
        param=where,
    )


def _content(content: Any, where: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    return [_part(p, f"{where}[{i}]") for i, p in enumerate(as_list(content, where))]


def _message(m: dict[str, Any], i: int) -> Message | list[TextPart]:
    where = f"messages[{i}]"
    role = m.get("role")
    parts = _content(m.get("content"), f"{where}.content")
    if role in ("system", "developer"):
        return [p for p in parts if isinstance(p, TextPart)]
    name = opt_str(m.get("name"), f"{where}.name")
    if role == "user":
        return Message("user", parts, name)
    if role == "assistant":
        blocks = m.get("thinking_blocks")
        reasoning = m.get("reasoning_content") or m.get("reasoning")
        if blocks is not None:  # signed thinking: it holds the reasoning_content's text
            parts[:0] = decode_blocks(blocks, f"{where}.thinking_blocks")
        elif isinstance(reasoning, str) and reasoning:
            parts.insert(0, ReasoningPart(text=reasoning))
        for j, item in enumerate(as_list(m.get("tool_calls") or [], f"{where}.tool_calls")):
            call = as_dict(item, f"{where}.tool_calls[{j}]")
            fn = as_dict(call.get("function"))
            signed = decode_call_signature(call, f"{where}.tool_calls[{j}]")
            if signed is not None:
                parts.append(signed)  # Gemini's: goes back on the call after it
            parts.append(
                ToolCallPart(
                    id=opt_str(call.get("id"), f"{where}.tool_calls[{j}].id") or f"call_{j}",
                    name=opt_str(fn.get("name"), f"{where}.tool_calls[{j}].name") or "",
                    arguments=opt_str(fn.get("arguments"), f"{where}.arguments") or "",
                )
            )
        return Message("assistant", parts, name)
    if role in ("tool", "function"):
        call_id = m.get("tool_call_id") if role == "tool" else m.get("name")
        result = [p for p in parts if isinstance(p, TextPart | ImagePart | FilePart)]
        return Message("tool", [ToolResultPart(str(call_id or ""), result)])
    raise bad_request(
        f"{where}.role is {str(role)[:40]!r}; it must be system, developer, user, "
        "assistant or tool.",
        param=f"{where}.role",
    )


def _tools(tools: Any) -> list[Tool]:
    out = []
    for i, item in enumerate(as_list(tools, "tools")):
        t = as_dict(item, f"tools[{i}]")
        if t.get("type", "function") != "function":
            raise bad_request(
                f"tools[{i}] is not a function tool; only function tools can be translated "
                "for this model's deployment.",
                param=f"tools[{i}]",
            )
        fn = as_dict(t.get("function"))
        name = opt_str(fn.get("name"), f"tools[{i}].function.name")
        if not name:
            raise bad_request(f"tools[{i}].function.name is required.", param=f"tools[{i}]")
        params = fn.get("parameters")
        out.append(
            Tool(
                name=name,
                description=opt_str(fn.get("description"), f"tools[{i}].function.description"),
                parameters=params if isinstance(params, dict) else {"type": "object"},
                strict=opt_bool(fn.get("strict"), f"tools[{i}].function.strict"),
            )
        )
    return out


def _tool_choice(choice: Any, parallel: bool | None) -> ToolChoice | None:
    if choice is None:
        return ToolChoice(parallel=parallel) if parallel is not None else None
    if choice in ("auto", "none", "required"):
        return ToolChoice(mode=choice, parallel=parallel)
    name = as_dict(as_dict(choice).get("function")).get("name")
    if not isinstance(name, str):
        raise bad_request(
            "'tool_choice' must be auto, none, required or "
            '{"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
        )
    return ToolChoice(mode="tool", name=name, parallel=parallel)


def _output(fmt: Any) -> OutputFormat | None:
    if fmt is None:
        return None
    kind = as_dict(fmt).get("type")
    if kind == "text":
        return OutputFormat()
    if kind == "json_object":
        return OutputFormat(kind="json_object")
    if kind == "json_schema":
        spec = as_dict(fmt.get("json_schema"))
        schema = spec.get("schema")
        return OutputFormat(
            kind="json_schema",
            name=opt_str(spec.get("name"), "response_format.json_schema.name"),
            schema=schema if isinstance(schema, dict) else None,
            strict=opt_bool(spec.get("strict"), "response_format.json_schema.strict"),
        )
    raise bad_request(
        "'response_format.type' must be text, json_object or json_schema.",
        param="response_format",
    )


def decode_request(body: dict[str, Any]) -> GenRequest:
    system: list[TextPart] = []
    messages: list[Message] = []
    for i, m in enumerate(as_list(body.get("messages"), "messages")):
        got = _message(as_dict(m, f"messages[{i}]"), i)
        if isinstance(got, Message):
            messages.append(got)
        else:
            system.extend(got)
    n = opt_int(body.get("n"), "n")
    if n is not None and n > 1:
        raise bad_request(
            "'n' above 1 cannot be translated for this model's deployment; ask once per choice.",
            param="n",
        )
    stop = body.get("stop")
    effort = opt_str(body.get("reasoning_effort"), "reasoning_effort")
    metadata = body.get("metadata")
    return GenRequest(
        model=str(body.get("model", "")),
        messages=messages,
        system=system,
        tools=_tools(body["tools"]) if body.get("tools") else [],
        tool_choice=_tool_choice(
            body.get("tool_choice"), opt_bool(body.get("parallel_tool_calls"), "parallel")
        ),
        max_output_tokens=opt_int(body.get("max_completion_tokens"), "max_completion_tokens")
        or opt_int(body.get("max_tokens"), "max_tokens"),
        temperature=opt_number(body.get("temperature"), "temperature"),
        top_p=opt_number(body.get("top_p"), "top_p"),
        top_k=opt_int(body.get("top_k"), "top_k"),
        stop=[stop] if isinstance(stop, str) else [str(s) for s in as_list(stop or [], "stop")],
        seed=opt_int(body.get("seed"), "seed"),
        presence_penalty=opt_number(body.get("presence_penalty"), "presence_penalty"),
        frequency_penalty=opt_number(body.get("frequency_penalty"), "frequency_penalty"),
        output=_output(body.get("response_format")),
        reasoning=Reasoning(effort=effort) if effort else None,
        stream=body.get("stream") is True,
        user=opt_str(body.get("user"), "user"),
        metadata={str(k): str(v) for k, v in metadata.items()}
        if isinstance(metadata, dict)
        else {},
    )


# ---------------------------------------------------------------- replies


def decode_reply(body: dict[str, Any]) -> GenReply:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamFailure("protocol", "the upstream's answer has no choices")
    choice = choices[0]
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise UpstreamFailure("protocol", "the upstream's answer has no message")
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else ""
    blocks = msg.get("thinking_blocks")
    if blocks is not None:  # signed thinking (openai_chat_reasoning.py)
        parts.extend(read_blocks(blocks, reasoning))
    elif reasoning:
        parts.append(ReasoningPart(text=reasoning))
    content = msg.get("content")
    if isinstance(content, str) and content:
        parts.append(TextPart(content))
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(TextPart(refusal))
    calls = msg.get("tool_calls")
    for i, call in enumerate(calls if isinstance(calls, list) else ()):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise UpstreamFailure("protocol", "the upstream's answer has a malformed tool call")
        args = fn.get("arguments")
        signature = read_call_signature(call)
        if signature is not None:  # Gemini's, bound to this call
            parts.append(ReasoningPart(signature=signature))
        parts.append(
            ToolCallPart(str(call.get("id") or f"call_{i}"), str(fn.get("name") or ""), str(args))
        )
    stop = stop_of(choice.get("finish_reason"), choice.get("stop_reason"))
    if isinstance(refusal, str) and refusal and stop.kind is Stop.END:
        stop = StopReason(Stop.REFUSAL, "refusal")
    created = body.get("created")
    return GenReply(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        parts=parts,
        stop=stop,
        usage=usage_of(body.get("usage")),
        created=created if isinstance(created, int) else 0,
    )


def encode_reply(reply: GenReply) -> dict[str, Any]:
    text = "".join(p.text for p in reply.parts if isinstance(p, TextPart))
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [p for p in reply.parts if isinstance(p, ToolCallPart)]
    blocks, signatures = reply_reasoning(reply.parts)
    if calls:
        msg["tool_calls"] = []
        for n, c in enumerate(calls):
            call = {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            if n in signatures:
                call["extra_content"] = extra_content(signatures[n])
            msg["tool_calls"].append(call)
    thought = "".join(p.text for p in reply.parts if isinstance(p, ReasoningPart))
    if thought:
        msg["reasoning_content"] = thought  # vLLM's and DeepSeek's field
    if blocks:
        msg["thinking_blocks"] = blocks  # signed reasoning (openai_chat_reasoning.py)
    body: dict[str, Any] = {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": msg,
                "logprobs": None,
                "finish_reason": finish_reason(reply.stop),
            }
        ],
    }
    if reply.usage is not None:
        body["usage"] = usage_body(reply.usage)
    return body


class _ChatCodec:
    name = "openai_chat"
    decode_request = staticmethod(decode_request)
    encode_request = staticmethod(encode_request)
    decode_reply = staticmethod(decode_reply)
    encode_reply = staticmethod(encode_reply)

    @staticmethod
    def stream_decoder() -> ChatStreamDecoder:
        return ChatStreamDecoder()

    @staticmethod
    def stream_encoder(*, include_usage: bool) -> ChatStreamEncoder:
        return ChatStreamEncoder(include_usage=include_usage)


CODEC = _ChatCodec()
