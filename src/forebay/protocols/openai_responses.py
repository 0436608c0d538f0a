"""OpenAI's Responses API (POST /v1/responses) <-> the canonical form.

Inbound, a client's request decodes to a `GenRequest` and the reply encodes to
a Response object (openai_responses_reply.py) or the semantic event stream
(openai_responses_stream.py). Outbound, for upstreams that speak Responses
natively (OpenAI, Azure), a canonical request encodes to a Responses body and
their replies decode back.

What has no canonical field rides in `extras["openai_responses"]`: hosted
tools (web_search, file_search, ...) and a tool_choice naming them, `namespace`
tools as sent (their functions are canonical tools too), `include`,
`truncation`, `service_tier` and every other field this module does not
interpret, so an upstream of this protocol gets them back. A request that
needs one of those to mean what it says lists it under `native_only`;
gateway/translate.py's `check_translatable` refuses it (400) before it is translated
for an upstream of another protocol, rather than silently dropping a tool the client relies on.
A hosted tool the caller offered without forcing it is listed under
`droppable` instead: routing sends it to a native deployment when the alias has
one, and may drop it otherwise (gateway/hosted.py); a forced one (a tool_choice
naming a hosted tool, or `required` with no function to call) is native_only.

Forebay keeps conversation state itself: `store` and `previous_response_id`
are the POST handler's business (api/responses.py), never an upstream's, so
encode_request always sends `store: false` and no previous_response_id.
"""

from __future__ import annotations

from typing import Any

from forebay.errors import bad_request
from forebay.protocols.canonical import (
    GenReply,
    GenRequest,
    ReasoningPart,
    StreamDecoder,
    StreamEncoder,
    TextPart,
)
from forebay.protocols.openai_responses_items import (
    Item,
    decode_input,
    encode_item,
    from_messages,
    to_messages,
)
from forebay.protocols.openai_responses_options import (
    decode_format,
    decode_metadata,
    decode_reasoning,
    decode_tool_choice,
    decode_tools,
    number,
    refuse_unsupported,
)
from forebay.protocols.openai_responses_reply import ResponseContext
from forebay.protocols.openai_responses_reply import decode_reply as _decode_reply
from forebay.protocols.openai_responses_reply import encode_reply as _encode_reply
from forebay.protocols.openai_responses_stream import ResponsesStreamEncoder
from forebay.protocols.openai_responses_stream_decode import ResponsesStreamDecoder

NAME = "openai_responses"

# Fields this module maps (or the POST handler owns); every other one is kept
# for a native upstream in extras["openai_responses"]["fields"].
_HANDLED = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
        "max_output_tokens", "temperature", "top_p", "reasoning", "metadata", "user", "stream",
        "store", "previous_response_id", "background", "conversation", "prompt",
    }
)  # fmt: skip


def request_from(
    body: dict[str, Any], items: list[Item], history: list[Item] | None = None
) -> GenRequest:
    """The canonical request of a Responses body whose input decoded to `items`,
    after the stored conversation `history` (previous responses, oldest first)."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("model is required.", param="model")
    refuse_unsupported(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("instructions must be a string.", param="instructions")
    native: list[str] = []
    kept: dict[str, Any] = {}
    req = GenRequest(model=body["model"], messages=[])
    req.tools = decode_tools(body, native, kept)
    req.tool_choice = decode_tool_choice(body, native, kept)
    forced = "tool_choice" in kept or (
        req.tool_choice is not None and req.tool_choice.mode == "required" and not req.tools
    )
    if forced and "droppable" in kept:
        native.extend(d["where"] for d in kept.pop("droppable"))
    req.output = decode_format(body, kept)
    add_history(req, body, items, history or [])
    max_out = body.get("max_output_tokens")
    if max_out is not None and (
        isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 16
    ):
        raise bad_request(
            "max_output_tokens must be an integer of at least 16.", param="max_output_tokens"
        )
    req.max_output_tokens = max_out
    req.temperature = number(body, "temperature", 0, 2)
    req.top_p = number(body, "top_p", 0, 1)
    req.reasoning = decode_reasoning(body)
    req.metadata = decode_metadata(body)
    for key in ("user", "safety_identifier"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise bad_request(f"{key} must be a string.", param=key)
    req.user = body.get("safety_identifier") or body.get("user")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream must be true or false.", param="stream")
    req.stream = bool(stream)
    if body.get("prompt") is not None:
        kept["prompt"] = body["prompt"]
        native.append("prompt (a stored OpenAI prompt template)")
    fields = {k: v for k, v in body.items() if k not in _HANDLED and v is not None}
    if body.get("user") is not None:
        fields["user"] = body["user"]
    if fields:
        kept["fields"] = fields
    if native:
        kept["native_only"] = native
    if kept:
        req.extras[NAME] = kept
    return req


def add_history(
    req: GenRequest, body: dict[str, Any], items: list[Item], history: list[Item]
) -> None:
    """Set the request's messages and system text: the stored conversation
    `history` (oldest first), then this request's own `items`. Instructions
    are this request's only: a previous response's are not carried over."""
    system, req.messages = to_messages([*history, *items])
    instructions = body.get("instructions")
    req.system = [*([TextPart(instructions)] if instructions else []), *system]


def encode_request(req: GenRequest, model: str) -> dict[str, Any]:
    if req.stop:
        raise bad_request(
            "stop sequences cannot be sent to an upstream that speaks the Responses API, "
            "which has none; remove stop for this model.",
            param="stop",
        )
    kept = req.extras.get(NAME, {})
    body: dict[str, Any] = {**kept.get("fields", {}), "model": model, "store": False}
    items = from_messages(req.messages)
    # Reasoning from another provider (no item id) cannot be read by this one.
    body["input"] = [
        encode_item(i, listed=False)
        for i in items
        if not (isinstance(i.parts[0], ReasoningPart) and not i.parts[0].id)
    ]
    if req.system:
        body["instructions"] = "\n\n".join(p.text for p in req.system)
    # Non-strict unless asked: Responses would default to strict, which refuses
    # the open schemas other protocols' tools usually have.
    namespaced = set(kept.get("namespaced", ()))  # sent back inside their namespace
    tools: list[dict[str, Any]] = [
        {"type": "function", "name": t.name, "parameters": t.parameters, "strict": bool(t.strict)}
        | ({"description": t.description} if t.description is not None else {})
        for t in req.tools
        if t.name not in namespaced
    ]
    tools += kept.get("tools", [])
    if tools:
        body["tools"] = tools
    choice = req.tool_choice
    if "tool_choice" in kept:
        body["tool_choice"] = kept["tool_choice"]
    elif choice is not None and choice.mode == "tool":
        body["tool_choice"] = {"type": "function", "name": choice.name}
    elif choice is not None and (choice.mode != "auto" or choice.parallel is None):
        body["tool_choice"] = choice.mode
    if choice is not None and choice.parallel is not None:
        body["parallel_tool_calls"] = choice.parallel
    text: dict[str, Any] = {}
    if req.output is not None:
        fmt: dict[str, Any] = {"type": req.output.kind}
        if req.output.kind == "json_schema":
            fmt.update(
                name=req.output.name or "output",
                schema=req.output.schema or {},
                strict=req.output.strict,
            )
            if "format_description" in kept:
                fmt["description"] = kept["format_description"]
        text["format"] = fmt
    if "verbosity" in kept:
        text["verbosity"] = kept["verbosity"]
    if text:
        body["text"] = text
    if req.reasoning is not None and (req.reasoning.effort or req.reasoning.summary):
        body["reasoning"] = {
            k: v
            for k, v in (("effort", req.reasoning.effort), ("summary", req.reasoning.summary))
            if v
        }
    for key, value in (
        ("max_output_tokens", req.max_output_tokens),
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("prompt", kept.get("prompt")),
    ):
        if value is not None:
            body[key] = value
    if req.metadata:
        body["metadata"] = req.metadata
    if req.user and "user" not in body and "safety_identifier" not in body:
        body["safety_identifier" if len(req.user) <= 64 else "user"] = req.user
    if req.stream:
        body["stream"] = True
    return body


class OpenAIResponses:
    """The Responses API as a `Codec`. encode_reply and stream_encoder also take
    the `ResponseContext` of the request being answered (its id and echo)."""

    name = NAME

    def decode_request(self, body: dict[str, Any]) -> GenRequest:
        return request_from(body, decode_input(body.get("input", [])))

    def encode_request(self, req: GenRequest, model: str) -> dict[str, Any]:
        return encode_request(req, model)

    def decode_reply(self, body: dict[str, Any]) -> GenReply:
        return _decode_reply(body)

    def encode_reply(self, reply: GenReply, ctx: ResponseContext | None = None) -> dict[str, Any]:
        return _encode_reply(reply, ctx)

    def stream_decoder(self) -> StreamDecoder:
        return ResponsesStreamDecoder()

    def stream_encoder(
        self, *, include_usage: bool = True, ctx: ResponseContext | None = None
    ) -> StreamEncoder:
        # A Response always carries its usage: include_usage has nothing to hide.
        return ResponsesStreamEncoder(ctx)


CODEC = OpenAIResponses()
