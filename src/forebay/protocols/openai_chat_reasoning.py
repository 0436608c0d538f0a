"""Signed reasoning in Chat Completions, which has no field of its own for it.

Two conventions the ecosystem documents, in both directions: a Chat client's
requests in and replies and streams out, and a Chat upstream's (Gemini's own
OpenAI-compatibility endpoint, LiteLLM, vLLM) requests out and replies and
streams in:

* A Gemini thought signature bound to a function call (canonically a text-less
  ReasoningPart just before the ToolCallPart) rides on that call as
  `tool_calls[].extra_content.google.thought_signature`, Google's own
  OpenAI-compatibility convention.
* Any other signed or redacted reasoning (Anthropic or Bedrock thinking, a
  Gemini signature on text) goes in the assistant message's `thinking_blocks`,
  LiteLLM's field: `{"type": "thinking", "thinking", "signature"}` or
  `{"type": "redacted_thinking", "data"}`, in order, beside the readable
  `reasoning_content`. In a stream, each block arrives whole in one chunk's
  delta when its part ends. A client that sends the message back with them
  keeps a multi-turn tool conversation valid for the upstream that signed it.

A client's junk is a 400 (decode_blocks, decode_call_signature); an upstream's
is dropped, as the native upstream codecs drop fields they cannot read
(read_blocks, read_call_signature): a signature that is not a string, or is
longer than a client could send back (values.MAX_OPAQUE), is no signature.
"""

from __future__ import annotations

from typing import Any

from forebay.errors import bad_request
from forebay.protocols.canonical import Part, ReasoningPart, ToolCallPart
from forebay.protocols.values import MAX_OPAQUE, as_dict, as_list, opt_opaque, opt_str


def block_of(p: ReasoningPart) -> dict[str, Any]:
    if p.redacted is not None and not p.text:
        return {"type": "redacted_thinking", "data": p.redacted}
    return {"type": "thinking", "thinking": p.text, "signature": p.signature or p.redacted or ""}


def extra_content(signature: str) -> dict[str, Any]:
    return {"google": {"thought_signature": signature}}


def call_signature(p: ReasoningPart, *, opaque: bool = False) -> str | None:
    """The signature a text-less part binds to the tool call after it.

    With `opaque` (a request to an upstream), so does the `redacted` of a part
    that came as a Responses reasoning item (it has the item's id): Responses
    has one opaque field, so a call's signature comes back as encrypted_content,
    decoded as redacted. A redacted part with no id (Anthropic's
    redacted_thinking, from a Messages or Chat client) stays a thinking block."""
    if p.text:
        return None
    if opaque and p.redacted and p.id is not None:
        return p.redacted
    return p.signature if p.redacted is None and p.signature else None


def reply_reasoning(
    parts: list[Part], *, opaque: bool = False
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The message's thinking_blocks, and each tool call's signature (by the
    call's position among the message's calls). `opaque`: see call_signature."""
    blocks: list[dict[str, Any]] = []
    signatures: dict[int, str] = {}
    calls = 0
    for i, p in enumerate(parts):
        if isinstance(p, ToolCallPart):
            calls += 1
        elif isinstance(p, ReasoningPart) and (p.signature or p.redacted is not None):
            sig = call_signature(p, opaque=opaque)
            nxt = parts[i + 1] if i + 1 < len(parts) else None
            if sig is not None and isinstance(nxt, ToolCallPart):
                signatures[calls] = sig
            else:
                blocks.append(block_of(p))
    return blocks, signatures


def decode_blocks(value: Any, where: str) -> list[Part]:
    """A client's `thinking_blocks`, as canonical reasoning parts (400s for junk)."""
    parts: list[Part] = []
    for j, raw in enumerate(as_list(value, where)):
        at = f"{where}[{j}]"
        block = as_dict(raw, at)
        kind = block.get("type")
        if kind == "thinking":
            parts.append(
                ReasoningPart(
                    text=opt_str(block.get("thinking"), f"{at}.thinking") or "",
                    signature=opt_opaque(block.get("signature"), f"{at}.signature") or None,
                )
            )
        elif kind == "redacted_thinking":
            data = opt_opaque(block.get("data"), f"{at}.data")
            if not data:
                raise bad_request(f"{at}.data is required.", param=f"{at}.data")
            parts.append(ReasoningPart(redacted=data))
        else:
            raise bad_request(
                f"{at}.type must be thinking or redacted_thinking.", param=f"{at}.type"
            )
    return parts


def decode_call_signature(call: dict[str, Any], where: str) -> ReasoningPart | None:
    """A tool call's `extra_content.google.thought_signature`, as the part before it."""
    extra = call.get("extra_content")
    if extra is None:
        return None
    google = as_dict(as_dict(extra, f"{where}.extra_content").get("google"))
    sig = opt_opaque(google.get("thought_signature"), f"{where}.extra_content.google")
    return ReasoningPart(signature=sig) if sig else None


# ---------------------------------------------------------------- an upstream's, leniently


def signature_of(value: Any) -> str | None:
    """An upstream's opaque value, if it is one a client could send back."""
    if isinstance(value, str) and value and len(value) <= MAX_OPAQUE:
        return value
    return None


def read_call_signature(call: dict[str, Any]) -> str | None:
    """An upstream tool call's `extra_content.google.thought_signature`, or None."""
    extra = call.get("extra_content")
    if not isinstance(extra, dict):
        return None
    google = extra.get("google")
    return signature_of(google.get("thought_signature")) if isinstance(google, dict) else None


def read_block(raw: Any) -> ReasoningPart | None:
    """One of an upstream's `thinking_blocks` as a reasoning part, or None for
    junk or a block with nothing in it."""
    if not isinstance(raw, dict):
        return None
    kind = raw.get("type")
    if kind == "thinking":
        sig = signature_of(raw.get("signature"))
        text = raw.get("thinking")
        text = text if isinstance(text, str) else ""
        return ReasoningPart(text=text, signature=sig) if text or sig else None
    if kind == "redacted_thinking":
        data = signature_of(raw.get("data"))
        return ReasoningPart(redacted=data) if data is not None else None
    return None


def read_blocks(value: Any, reasoning: str) -> list[Part]:
    """An upstream message's `thinking_blocks` as reasoning parts, else its
    `reasoning_content`. The blocks hold that text; when none of them has text
    of its own (a server that puts it only in `reasoning_content`), the first
    signed block takes it."""
    blocks = [read_block(raw) for raw in value] if isinstance(value, list) else []
    parts: list[Part] = [p for p in blocks if p is not None]
    if not parts:
        return [ReasoningPart(text=reasoning)] if reasoning else []
    if reasoning and not any(isinstance(p, ReasoningPart) and p.text for p in parts):
        first = next((p for p in parts if isinstance(p, ReasoningPart) and p.signature), None)
        if first is not None:
            first.text = reasoning
        else:
            parts.insert(0, ReasoningPart(text=reasoning))
    return parts


def strip_signed_history(payload: dict[str, Any]) -> None:
    """Take this module's fields out of a Chat request for an upstream that
    neither signs reasoning nor documents them (OpenAI's and Azure's own API):
    it could not use them, and a strict validator might refuse the request."""
    for msg in payload.get("messages", ()):
        if msg.get("role") != "assistant":
            continue
        msg.pop("thinking_blocks", None)
        for call in msg.get("tool_calls") or ():
            call.pop("extra_content", None)
