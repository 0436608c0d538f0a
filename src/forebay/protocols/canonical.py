"""One form for a generation request, its reply and its stream, whatever the wire.

Every protocol (protocols/<name>.py) decodes into and encodes from these types,
so N inbound protocols and M upstream protocols cost N + M translators. They
are only built when the two ends differ: same protocol both ends, the bytes
pass through untouched (dispatch.py) and nothing here is allocated.

Conventions every codec keeps:
* `Usage.input_tokens` counts *all* input tokens, cached ones included (as
  OpenAI does); `cache_read_tokens` and `cache_write_tokens` are parts of it.
  A codec for a wire that counts them outside (Anthropic) adds them on decode
  and subtracts them on encode.
* Tool-call arguments are JSON text, as the model produced it (it may be
  invalid JSON mid-stream, or even at the end): never parsed and re-dumped.
* A stop reason has one canonical value; the wire's own word is kept in `raw`
  so that a reason with no equivalent elsewhere is not silently collapsed.
* Anything a protocol carries that has no canonical field and matters only to
  an upstream of the same family goes in `extras` (keyed by protocol name),
  and an encoder for another family ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

# ---------------------------------------------------------------- content parts


@dataclass(slots=True)
class TextPart:
    text: str
    cache_control: dict[str, Any] | None = None  # Anthropic prompt caching, passed on


@dataclass(slots=True)
class ImagePart:
    """An image by URL, or inline as base64 `data` with its media type."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None  # OpenAI's "low" / "high" / "auto"
    cache_control: dict[str, Any] | None = None
    file_id: str | None = None  # an image uploaded to the provider (OpenAI Responses input_image)


@dataclass(slots=True)
class AudioPart:
    data: str  # base64
    format: str  # "wav", "mp3", ...


@dataclass(slots=True)
class FilePart:
    """A document: inline base64 `data`, a provider `file_id`, or a `url`."""

    data: str | None = None
    file_id: str | None = None
    url: str | None = None
    filename: str | None = None
    media_type: str | None = None
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolCallPart:
    id: str
    name: str
    arguments: str  # JSON text, untouched


@dataclass(slots=True)
class ToolResultPart:
    call_id: str
    content: list[TextPart | ImagePart | FilePart]
    is_error: bool = False
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ReasoningPart:
    """Model reasoning: readable `text` (a summary or Anthropic thinking), an
    opaque `signature` that must go back verbatim to the provider that made it,
    or `redacted` data (Anthropic `redacted_thinking`, OpenAI encrypted content).

    A part with a signature and no text is a Gemini thought signature, bound to
    the part after it (a function call, usually). Wires with one opaque field
    (Responses `encrypted_content`) carry `redacted` else `signature` in it and
    decode it as `redacted`; so an upstream encoder that needs a signature takes
    `signature or redacted` for a part with text (Anthropic, Bedrock) and for
    any part (Gemini, which has no redacted reasoning)."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    id: str | None = None


Part = TextPart | ImagePart | AudioPart | FilePart | ToolCallPart | ToolResultPart | ReasoningPart

Role = Literal["user", "assistant", "tool"]


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part]
    name: str | None = None


# ---------------------------------------------------------------- request


@dataclass(slots=True)
class Tool:
    """A function the model may call; `parameters` is a JSON schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode "tool"
    parallel: bool | None = None  # None: the provider's default


@dataclass(slots=True)
class OutputFormat:
    """Plain text, any JSON object, or JSON that matches `schema`."""

    kind: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Reasoning:
    effort: str | None = None  # "minimal" / "low" / "medium" / "high" (OpenAI)
    budget_tokens: int | None = None  # Anthropic thinking, Gemini thinkingBudget
    summary: str | None = None  # OpenAI Responses reasoning.summary


@dataclass(slots=True)
class GenRequest:
    model: str
    messages: list[Message]
    system: list[TextPart] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    output: OutputFormat | None = None
    reasoning: Reasoning | None = None
    stream: bool = False
    user: str | None = None  # end-user id, for the provider's abuse tracking
    metadata: dict[str, str] = field(default_factory=dict)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)


# ---------------------------------------------------------------- reply


class Stop(StrEnum):
    END = "end"  # the model finished its turn
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"  # never to become END on the way out
    REFUSAL = "refusal"
    PAUSE = "pause"  # Anthropic pause_turn: a long turn the client should continue
    CONTEXT_WINDOW = "context_window"  # the prompt plus output hit the model's window
    ERROR = "error"
    OTHER = "other"


@dataclass(slots=True)
class StopReason:
    kind: Stop
    raw: str | None = None  # the upstream's own word, e.g. "SAFETY", "guardrail_intervened"
    sequence: str | None = None  # the stop sequence that matched


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all of them, cached included
    output_tokens: int = 0  # reasoning included
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class GenReply:
    id: str
    model: str
    parts: list[Part]  # text, tool calls and reasoning, in the order produced
    stop: StopReason
    usage: Usage | None
    created: int = 0  # unix seconds


# ---------------------------------------------------------------- stream events
#
# A stream is StreamStart, then for each output part (by `index`, from 0, in
# order) PartStart, its deltas and PartStop, then StreamEnd; or StreamError at
# any point. Parts may interleave (parallel tool calls), which is why every
# event names its index.


@dataclass(slots=True)
class StreamStart:
    id: str
    model: str
    usage: Usage | None = None  # what is known up front (Anthropic sends input tokens)


@dataclass(slots=True)
class PartStart:
    index: int
    kind: Literal["text", "tool_call", "reasoning"]
    tool_call_id: str | None = None
    tool_name: str | None = None
    item_id: str | None = None  # the wire's own id of the output item (OpenAI Responses rs_...)
    redacted: str | None = None  # a reasoning part that arrives whole and opaque


@dataclass(slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(slots=True)
class ToolArgsDelta:
    index: int
    json: str  # a fragment of the arguments' JSON text


@dataclass(slots=True)
class ReasoningDelta:
    index: int
    text: str = ""
    signature: str | None = None  # arrives whole, usually last
    redacted: str | None = (
        None  # opaque reasoning (Bedrock redactedContent, OpenAI encrypted_content)
    )


@dataclass(slots=True)
class PartStop:
    index: int


@dataclass(slots=True)
class StreamEnd:
    stop: StopReason
    usage: Usage | None


@dataclass(slots=True)
class StreamError:
    """The upstream reported an error inside a stream that had started."""

    message: str
    type: str = "upstream_stream_error"
    status: int = 502


StreamEvent = (
    StreamStart
    | PartStart
    | TextDelta
    | ToolArgsDelta
    | ReasoningDelta
    | PartStop
    | StreamEnd
    | StreamError
)


# ---------------------------------------------------------------- codecs


class StreamDecoder(Protocol):
    """Upstream stream bytes (any framing: SSE, AWS event-stream) to events."""

    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]:
        """The stream's end: what is left, or a StreamError if it was cut short."""
        ...


class StreamEncoder(Protocol):
    """Events to the bytes a client of this protocol expects (SSE, usually)."""

    def encode(self, event: StreamEvent) -> bytes: ...


class Codec(Protocol):
    """One wire protocol, both ways: a client's requests in and replies out
    (decode_request / encode_reply / stream_encoder), and an upstream's
    requests out and replies in (encode_request / decode_reply / stream_decoder).
    Decoders raise forebay.errors.ForebayError(400, ...) for what the
    protocol's published reference refuses, and nothing stricter."""

    name: str

    def decode_request(self, body: dict[str, Any]) -> GenRequest: ...

    def encode_request(self, req: GenRequest, model: str) -> dict[str, Any]: ...

    def decode_reply(self, body: dict[str, Any]) -> GenReply: ...

    def encode_reply(self, reply: GenReply) -> dict[str, Any]: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder: ...
