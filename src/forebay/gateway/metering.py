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
from forebay.protocols.canonical import Usage

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English BPE tokenizers
_DEFAULT_BOUNDS = PartBounds()


def usage_counts(usage: Any) -> Usage | None:
    """The counts in a `usage` object, or None: Chat's, completions' and
    embeddings' `prompt_tokens` / `completion_tokens`, or the `input_tokens` /
    `output_tokens` of Responses and Anthropic Messages.

    Cached input (`prompt_tokens_details.cached_tokens`, Responses'
    `input_tokens_details.cached_tokens`) and reasoning tokens are parts of the two
    totals, as canonical.Usage counts them; Anthropic's cache reads and writes are
    counted outside its `input_tokens` and are added to it here. A part larger than
    its total, or not a count at all, is fitted to it, so no upstream can make the
    cost negative."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    if not isinstance(prompt, int):
        return _input_output(usage)
    completion = usage.get("completion_tokens", 0)
    counts = Usage(prompt, completion if isinstance(completion, int) else 0)
    details = usage.get("prompt_tokens_details")
    if details:  # absent or null from most self-hosted servers: two lookups, no more
        counts.cache_read_tokens = _part(details, "cached_tokens", counts.input_tokens)
    details = usage.get("completion_tokens_details")
    if details:
        counts.reasoning_tokens = _part(details, "reasoning_tokens", counts.output_tokens)
    return counts


def _input_output(usage: dict[str, Any]) -> Usage | None:
    prompt = usage.get("input_tokens")
    if not isinstance(prompt, int):
        return None
    completion = usage.get("output_tokens", 0)
    counts = Usage(max(prompt, 0), completion if isinstance(completion, int) else 0)
    read = _part(usage, "cache_read_input_tokens", 1 << 62)  # Anthropic: outside input
    write = _part(usage, "cache_creation_input_tokens", 1 << 62)
    if read or write:
        counts.input_tokens += read + write
        counts.cache_read_tokens, counts.cache_write_tokens = read, write
    details = usage.get("input_tokens_details")  # Responses: inside input
    if details:
        counts.cache_read_tokens = _part(details, "cached_tokens", counts.input_tokens)
    details = usage.get("output_tokens_details")
    if details:
        counts.reasoning_tokens = _part(details, "reasoning_tokens", counts.output_tokens)
    return counts


def _part(details: Any, name: str, total: int) -> int:
    value = details.get(name) if isinstance(details, dict) else None
    if not isinstance(value, int) or value <= 0:
        return 0
    return min(value, max(total, 0))


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


def cost_usd(
    dep: Deployment, prompt: int, completion: int, cache_read: int = 0, cache_write: int = 0
) -> float:
    """What one request costs on `dep`: `prompt` counts every input token, cached
    ones included, and `completion` every output token, reasoning included, so

        (prompt - cache_read - cache_write) x input + cache_read x cache_read price
          + cache_write x cache_write price + completion x output

    with an unset cache price meaning the input price. The plain request (no cache
    tokens) costs two multiplications, as it always did."""
    cost = prompt * dep.usd_per_input_token + completion * dep.usd_per_output_token
    if cache_read or cache_write:
        base = dep.usd_per_input_token
        cache_read = min(max(cache_read, 0), max(prompt, 0))
        cache_write = min(max(cache_write, 0), max(prompt, 0) - cache_read)
        read = dep.usd_per_cache_read_token
        write = dep.usd_per_cache_write_token
        if read is not None:
            cost += cache_read * (read - base)
        if write is not None:
            cost += cache_write * (write - base)
    return cost


def input_price_bound(dep: Deployment) -> float:
    """The most one prompt token can cost on `dep`, whether cached, written to the
    cache or neither: what a reservation must assume for each."""
    return max(
        dep.usd_per_input_token,
        dep.usd_per_cache_read_token or 0.0,
        dep.usd_per_cache_write_token or 0.0,
    )


def energy_wh(dep: Deployment, prompt: int, completion: int) -> float:
    joules = prompt * dep.joules_per_input_token + completion * dep.joules_per_output_token
    return joules / 3600.0
