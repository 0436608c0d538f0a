"""Tokens, cost and energy for one request.

Upstream `usage` is the truth when present. When it is missing (an aborted
stream, an upstream that does not report it) the counts are estimated and the
ledger says so, rather than recording zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from forebay.config.settings import Deployment, PartBounds

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English BPE tokenizers
_DEFAULT_BOUNDS = PartBounds()


def usage_counts(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) from a `usage` object, or None: Chat's, or the
    `input_tokens` / `output_tokens` of Responses and Anthropic (whose cache
    tokens are counted outside `input_tokens`, and are added back here)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    if not isinstance(prompt, int):
        return _input_output(usage)
    completion = usage.get("completion_tokens", 0)
    return prompt, completion if isinstance(completion, int) else 0


def _input_output(usage: dict[str, Any]) -> tuple[int, int] | None:
    prompt = usage.get("input_tokens")
    if not isinstance(prompt, int):
        return None
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
        extra = usage.get(key)
        if isinstance(extra, int):
            prompt += extra
    completion = usage.get("output_tokens", 0)
    return prompt, completion if isinstance(completion, int) else 0


def usage_details(usage: Any) -> tuple[int, int, int] | None:
    """(cache read, cache write, reasoning) tokens of a usage object, None when
    it reports none: Chat's and Responses' `*_tokens_details`, Anthropic's
    `cache_*_input_tokens`."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    completion = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    read = _count(prompt, "cached_tokens") or _count(usage, "cache_read_input_tokens")
    write = _count(usage, "cache_creation_input_tokens")
    reasoning = _count(completion, "reasoning_tokens")
    return (read, write, reasoning) if read or write or reasoning else None


def _count(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


# Chat templates wrap each message in a few special tokens (role markers, turn ends),
# and each image, audio or file part in markers of its own.
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_REQUEST = 16
TEMPLATE_TOKENS_PER_PART = 8

# Content part types by what bounds their cost. Chat Completions, Responses and
# Anthropic Messages spellings side by side; text parts name the field holding the text.
_TEXT_FIELD = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "thinking": "thinking",
    "redacted_thinking": "data",
}
_IMAGES = frozenset({"image_url", "input_image", "image"})
_FILES = frozenset({"file", "input_file", "document"})
# Parts whose cost is their own JSON text (a tool call's name and arguments).
_AS_JSON = frozenset({"tool_use", "function_call", "custom_tool_call"})
# Parts holding more parts, or a string, under `content` / `output`.
_NESTED = {"tool_result": "content", "function_call_output": "output"}
# Top-level fields the template renders into the prompt.
_RENDERED = ("tools", "functions", "tool_choice", "response_format")
_MESSAGE_TEXT = ("role", "content")
_ELSEWHERE = frozenset({"system", "instructions", *_RENDERED})


@dataclass(slots=True)
class PromptShape:
    """What a request's prompt is made of, counted in one walk of the body, so the
    bound for each deployment it may go to is a few multiplications."""

    chars: int = 0  # of text, for a typical estimate
    text_bytes: int = 0  # UTF-8 bytes of text: at most one token each
    messages: int = 0
    parts: int = 0  # image, audio and file parts (template markers)
    images: int = 0
    audio_bytes: int = 0  # inline audio data, as sent (base64)
    files: int = 0
    unknown: int = 0  # parts only the context size bounds

    def bound(self, b: PartBounds) -> int:
        """An upper bound on the prompt tokens on a deployment with these bounds."""
        tokens = (
            self.text_bytes
            + self.messages * TEMPLATE_TOKENS_PER_MESSAGE
            + TEMPLATE_TOKENS_PER_REQUEST
        )
        if self.parts or self.unknown:
            audio = -(-self.audio_bytes * b.audio_tokens_per_mb // 1_000_000)  # ceiling
            tokens += (
                self.parts * TEMPLATE_TOKENS_PER_PART
                + self.images * b.image_tokens
                + audio
                + self.files * b.file_tokens
                + self.unknown * b.context_tokens
            )
        return tokens

    def text(self, value: str) -> None:
        self.chars += len(value)
        self.text_bytes += len(value.encode("utf-8", "surrogatepass"))

    def json(self, value: Any) -> None:
        """Counted as its JSON text: never fewer bytes than the strings inside it."""
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError:  # nested too deep to measure: bound it by the context
            self.unknown += 1
            return
        self.chars += size
        self.text_bytes += size

    def message(self, msg: Any) -> None:
        self.messages += 1
        if not isinstance(msg, dict):
            self.json(msg)
            return
        content = msg.get("content")
        if isinstance(content, str):  # the common case, inline
            self.chars += len(content)
            self.text_bytes += len(content.encode("utf-8", "surrogatepass"))
        else:
            self.content(content)
        if len(msg) > 2:  # tool calls, names, ids: rendered into the prompt too
            for key, value in msg.items():
                if key in _MESSAGE_TEXT or value is None:
                    continue
                if key == "audio":  # a reference to earlier audio: its size is unknown
                    self.unknown += 1
                else:
                    self.json(value)

    def content(self, content: Any, depth: int = 0) -> None:
        if isinstance(content, str):
            self.text(content)
        elif isinstance(content, list):
            for part in content:
                self.part(part, depth)
        elif content is not None:
            self.json(content)

    def part(self, part: Any, depth: int) -> None:
        if isinstance(part, str):
            self.text(part)
            return
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            self.unknown += 1
            return
        assert isinstance(part, dict)
        field = _TEXT_FIELD.get(kind)
        if field is not None:
            text = part.get(field)
            if isinstance(text, str):
                self.text(text)
            elif text is not None:
                self.json(text)
        elif kind in _IMAGES:
            self.parts += 1
            self.images += 1
        elif kind == "input_audio":
            self.parts += 1
            audio = part.get("input_audio")
            data = audio.get("data") if isinstance(audio, dict) else part.get("data")
            if isinstance(data, str):
                self.audio_bytes += len(data)
            else:  # not inline: nothing says how long it is
                self.unknown += 1
        elif kind in _FILES:
            self.parts += 1
            self.files += 1
        elif kind in _AS_JSON:
            self.json(part)
        elif kind in _NESTED and depth < 2:
            self.content(part.get(_NESTED[kind]), depth + 1)
        elif kind == "message" and depth < 2:
            self.message({k: v for k, v in part.items() if k != "type"})
        else:
            self.unknown += 1


def prompt_shape(payload: dict[str, Any]) -> PromptShape:
    """One walk over every place a prompt can hold content: chat `messages`, Anthropic's
    `system`, Responses `instructions` and `input` items, completions `prompt` and
    embeddings `input` (strings, token ids, or lists of token ids)."""
    shape = PromptShape()
    messages = payload.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            shape.message(msg)
    if not _ELSEWHERE.isdisjoint(payload):  # one pass over the body's keys, in C
        for key in ("system", "instructions"):
            if key in payload:
                shape.content(payload[key])
        for key in _RENDERED:
            value = payload.get(key)
            if value is not None:
                shape.json(value)
    for key in ("prompt", "input"):
        value = payload.get(key)
        if isinstance(value, str):
            shape.text(value)
        elif isinstance(value, list):
            for v in value:
                _prompt_item(shape, v)
    return shape


def _prompt_item(shape: PromptShape, item: Any) -> None:
    if isinstance(item, str):
        shape.text(item)
    elif isinstance(item, int):  # a token id
        shape.chars += CHARS_PER_TOKEN
        shape.text_bytes += 1
    elif isinstance(item, list):  # a prompt given as token ids
        for token in item:
            if isinstance(token, int):
                shape.chars += CHARS_PER_TOKEN
                shape.text_bytes += 1
            else:
                shape.json(token)
    elif isinstance(item, dict) and "content" in item:  # a Responses message item
        shape.message(item)
    else:  # a Responses item of another type, or a bare part
        shape.part(item, 0)


def estimate_prompt_tokens(payload: dict[str, Any]) -> int:
    """A typical count, for the ledger when the upstream reports none."""
    chars = prompt_shape(payload).chars
    return max(1, chars // CHARS_PER_TOKEN) if chars else 0


def prompt_token_bound(payload: dict[str, Any], bounds: PartBounds = _DEFAULT_BOUNDS) -> int:
    """An upper bound on the prompt tokens any byte-level tokenizer can produce
    (at most one token per byte, plus the chat template), with each image, audio
    and file part at the deployment's bound for it, so reserving it before dispatch
    can never be less than what the upstream then counts."""
    return prompt_shape(payload).bound(bounds)


def cost_usd(dep: Deployment, prompt: int, completion: int) -> float:
    return prompt * dep.usd_per_input_token + completion * dep.usd_per_output_token


def energy_wh(dep: Deployment, prompt: int, completion: int) -> float:
    joules = prompt * dep.joules_per_input_token + completion * dep.joules_per_output_token
    return joules / 3600.0
