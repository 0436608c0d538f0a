"""Signed reasoning in Chat Completions, which has no field of its own for it.

Two conventions the ecosystem documents, both ways (client requests in, replies
and streams out):

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
"""

from __future__ import annotations

from typing import Any

from forebay.errors import bad_request
from forebay.protocols.canonical import Part, ReasoningPart, ToolCallPart
from forebay.protocols.values import as_dict, as_list, opt_opaque, opt_str


def block_of(p: ReasoningPart) -> dict[str, Any]:
    if p.redacted is not None and not p.text:
        return {"type": "redacted_thinking", "data": p.redacted}
    return {"type": "thinking", "thinking": p.text, "signature": p.signature or p.redacted or ""}


def extra_content(signature: str) -> dict[str, Any]:
    return {"google": {"thought_signature": signature}}


def call_signature(p: ReasoningPart) -> str | None:
    """The signature a text-less part binds to the tool call after it."""
    return p.signature if not p.text and p.redacted is None and p.signature else None


def reply_reasoning(parts: list[Part]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The message's thinking_blocks, and each tool call's signature (by the
    call's position among the reply's calls)."""
    blocks: list[dict[str, Any]] = []
    signatures: dict[int, str] = {}
    calls = 0
    for i, p in enumerate(parts):
        if isinstance(p, ToolCallPart):
            calls += 1
        elif isinstance(p, ReasoningPart) and (p.signature or p.redacted is not None):
            sig = call_signature(p)
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
