"""Approximate tokens and deterministic filler text for the simulated model server.

The simulator has no tokenizer: one word or punctuation mark counts as one token, which
is close enough for timing (real BPE tokenizers give ~1.3 tokens per English word) and
keeps prompts that share a prefix sharing token ids, which is all the prefix cache needs.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

_PIECE = re.compile(r"\w+|[^\w\s]")

_WORDS = [
    "water",
    "flows",
    "from",
    "the",
    "forebay",
    "into",
    "the",
    "turbines",
    "at",
    "the",
    "rate",
    "they",
    "can",
    "run",
    "while",
    "the",
    "pool",
    "absorbs",
    "uneven",
    "inflow",
    "and",
    "keeps",
    "the",
    "head",
    "steady",
    "for",
    "every",
    "unit",
    "downstream",
]


def tokenize(text: str) -> list[int]:
    """Stable token ids for `text` (one per word or punctuation mark)."""
    return [zlib.crc32(piece.encode()) & 0x7FFFFFFF for piece in _PIECE.findall(text)]


def chat_prompt(messages: list[dict[str, object]]) -> str:
    """Flatten chat messages the way a chat template would, role markers included."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(f"<|{message.get('role', 'user')}|> {content or ''}")
    return "\n".join(parts) + "\n<|assistant|>"


def filler(seed: int) -> Iterator[str]:
    """An endless, deterministic stream of word pieces (each a token) for one request."""
    state = seed & 0xFFFFFFFF or 1
    first = True
    while True:
        state = (1103515245 * state + 12345) & 0x7FFFFFFF
        word = _WORDS[state % len(_WORDS)]
        yield word if first else " " + word
        first = False
