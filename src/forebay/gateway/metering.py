"""Tokens, cost and energy for one request.

Upstream `usage` is the truth when present. When it is missing (an aborted
stream, an upstream that does not report it) the counts are estimated and the
ledger says so, rather than recording zero.
"""

from __future__ import annotations

from typing import Any

from forebay.config.settings import Deployment

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English BPE tokenizers


def usage_counts(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) from an OpenAI `usage` object, or None."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int):
        return None
    return prompt, completion if isinstance(completion, int) else 0


def _prompt_text(payload: dict[str, Any]) -> tuple[int, int, int]:
    """(characters, UTF-8 bytes, messages) of the prompt text in a request body."""
    chars = size = count = 0

    def add(text: str) -> None:
        nonlocal chars, size
        chars += len(text)
        size += len(text.encode("utf-8", "surrogatepass"))

    for msg in payload.get("messages") or ():
        count += 1
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            add(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    add(part["text"])
    for key in ("prompt", "input"):
        value = payload.get(key)
        if isinstance(value, str):
            add(value)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    add(v)
                elif isinstance(v, int):  # a token id
                    chars += CHARS_PER_TOKEN
                    size += 1
    return chars, size, count


def estimate_prompt_tokens(payload: dict[str, Any]) -> int:
    """A typical count, for the ledger when the upstream reports none."""
    chars, _, _ = _prompt_text(payload)
    return max(1, chars // CHARS_PER_TOKEN) if chars else 0


# Chat templates wrap each message in a few special tokens (role markers, turn ends).
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_REQUEST = 16


def prompt_token_bound(payload: dict[str, Any]) -> int:
    """An upper bound on the prompt tokens any byte-level tokenizer can produce
    (at most one token per byte, plus the chat template), so reserving it
    before dispatch can never be less than what the upstream then counts."""
    _, size, messages = _prompt_text(payload)
    extra = len(str(payload.get("tools") or "")) + len(str(payload.get("response_format") or ""))
    return size + extra + messages * TEMPLATE_TOKENS_PER_MESSAGE + TEMPLATE_TOKENS_PER_REQUEST


def cost_usd(dep: Deployment, prompt: int, completion: int) -> float:
    return prompt * dep.usd_per_input_token + completion * dep.usd_per_output_token


def energy_wh(dep: Deployment, prompt: int, completion: int) -> float:
    joules = prompt * dep.joules_per_input_token + completion * dep.joules_per_output_token
    return joules / 3600.0
