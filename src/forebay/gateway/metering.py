"""Tokens, cost and energy for one request.

Upstream `usage` is the truth when present. When it is missing (an aborted
stream, an upstream that does not report it) the counts are estimated and the
ledger says so, rather than recording zero.
"""

from __future__ import annotations

from typing import Any

from forebay.config import Deployment

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


def estimate_prompt_tokens(payload: dict[str, Any]) -> int:
    chars = 0
    for msg in payload.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    for key in ("prompt", "input"):
        value = payload.get(key)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            chars += sum(len(v) for v in value if isinstance(v, str))
    return max(1, chars // CHARS_PER_TOKEN) if chars else 0


def cost_usd(dep: Deployment, prompt: int, completion: int) -> float:
    return prompt * dep.usd_per_input_token + completion * dep.usd_per_output_token


def energy_wh(dep: Deployment, prompt: int, completion: int) -> float:
    joules = prompt * dep.joules_per_input_token + completion * dep.joules_per_output_token
    return joules / 3600.0
