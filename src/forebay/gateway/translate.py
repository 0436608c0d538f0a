"""Between a client and a deployment that speak different protocols.

The body is decoded to canonical once per request (cached on the request) and
encoded for each deployment tried; the reply is decoded and encoded back, and
a stream goes through `TranslatingRelay`, which offers the dispatcher the
surface `SseRelay` does (feed / tail, usage, saw_done, torn, upstream_error,
content_events), so retries before the first byte, recording before the last
bytes, hedging, slot release and redaction work the same on both paths.
`PassThroughRelay` is for a protocol other than Chat on both ends: its bytes go
through untouched while its codec reads a copy for usage, errors and the end.

A request may also be translated to its own protocol (`ParsedRequest.verbatim`
False: a Responses request whose state Forebay keeps, api/responses.py), and
may bring its own inbound codec, bound to it (`ParsedRequest.inbound`).
Before a request crosses to another protocol, `check_translatable` refuses what
only a native upstream could serve (what its codec marked `native_only`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from forebay.errors import bad_request, upstream_error
from forebay.gateway.redact import Redactor
from forebay.protocols.canonical import (
    Codec,
    GenReply,
    GenRequest,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolArgsDelta,
    Usage,
)
from forebay.protocols.option_policy import param, unmet
from forebay.protocols.registry import NoCodec, codec_for
from forebay.protocols.sse import json_of, parse_frame
from forebay.upstreams.base import Endpoint, WireProtocol

# When a deployment speaks several protocols, the one requests are translated to.
PREFERRED = (
    WireProtocol.OPENAI_CHAT,
    WireProtocol.OPENAI_RESPONSES,
    WireProtocol.ANTHROPIC_MESSAGES,
    WireProtocol.GEMINI,
    WireProtocol.BEDROCK_CONVERSE,
)
# The call each protocol's generation goes to; the rest use MESSAGES.
ENDPOINTS = {
    WireProtocol.OPENAI_CHAT: Endpoint.CHAT,
    WireProtocol.OPENAI_RESPONSES: Endpoint.RESPONSES,
}
GENERATION = frozenset({Endpoint.CHAT, Endpoint.RESPONSES, Endpoint.MESSAGES})


class StreamRelay(Protocol):
    """What the dispatcher's `_Relay` needs of the thing that turns upstream
    stream bytes into client bytes."""

    usage: Usage | None  # once the upstream said
    content_events: int
    saw_done: bool  # the stream's last event has been produced
    torn: bool  # the upstream stream was cut short
    upstream_error: dict[str, Any] | None

    def feed(self, chunk: bytes) -> bytes: ...

    def tail(self) -> bytes: ...

    def error_event(self, message: str, code: str) -> bytes:
        """The client protocol's last event for a stream that failed."""
        ...


@dataclass(frozen=True, slots=True)
class Translation:
    inbound: Codec
    outbound: Codec
    endpoint: Endpoint


def check_translatable(req: GenRequest, protocol: WireProtocol) -> None:
    """Refuse (400) what the inbound codec marked `native_only` in its extras
    (Messages' container and mcp_servers, a forced hosted tool), and a hosted
    tool it marked `droppable` that routing did not drop (gateway/hosted.py
    drops them only for an alias without a native deployment): only an upstream
    of the caller's own protocol could act on them, and silently dropping one
    would change the answer."""
    for extra in req.extras.values():
        native = [*extra.get("native_only", ()), *(d["where"] for d in extra.get("droppable", ()))]
        if native:
            raise bad_request(
                f"{', '.join(native)}: only an upstream that speaks {protocol} natively can "
                f"serve this, and this deployment of '{req.model[:200]}' does not; remove "
                f"{'it' if len(native) == 1 else 'them'}, or route this model to such an upstream.",
                param=native[0],
                code="not_translatable",
            )


def translation(
    protocol: WireProtocol,
    endpoint: Endpoint,
    wire: frozenset[WireProtocol],
    inbound: Codec | None = None,
) -> Translation:
    if endpoint not in GENERATION:
        raise bad_request(
            f"This model's deployment does not serve /v1/{endpoint.value} (it speaks "
            f"{', '.join(sorted(wire))}); use /v1/chat/completions or /v1/messages.",
            code="unsupported_endpoint",
        )
    # The client's own protocol when the deployment speaks it (a request that
    # must not be relayed verbatim), else the first it speaks.
    target = protocol if protocol in wire else next((p for p in PREFERRED if p in wire), None)
    try:
        if target is None:
            raise NoCodec(f"the deployment speaks no known protocol ({sorted(wire)})")
        return Translation(
            inbound or codec_for(protocol),
            codec_for(target),
            ENDPOINTS.get(target, Endpoint.MESSAGES),
        )
    except NoCodec as exc:
        raise upstream_error(
            502, f"Forebay cannot reach this deployment: {exc}", code="no_translator"
        ) from None


def encode_for(t: Translation, req: GenRequest, model: str) -> dict[str, Any]:
    """The upstream's payload; a 400 for what cannot cross to its protocol."""
    if t.inbound.name != t.outbound.name:
        check_translatable(req, WireProtocol(t.inbound.name))
        check_options(t, req, model)
    return t.outbound.encode_request(req, model)


def check_options(t: Translation, req: GenRequest, model: str) -> None:
    """Refuse (400) an output form the upstream's protocol cannot give
    (protocols/option_policy.py); what it only drops is announced on the reply."""
    refused, _ = unmet(req, t.outbound.name, model)
    if refused:
        name = param(t.inbound.name, refused[0])
        kind = req.output.kind if req.output is not None else ""
        raise bad_request(
            f"{name}: {kind} output is not something this deployment of '{req.model[:200]}' "
            f"({t.outbound.name}) can produce; remove it, ask for it in the prompt, or "
            "route this model to an upstream that supports it.",
            param=name,
            code="unsupported_parameter",
        )


def dropped_params(t: Translation, req: GenRequest, model: str) -> str:
    """The caller's parameters the upstream ignores, for x-forebay-dropped-params."""
    if t.inbound.name == t.outbound.name:
        return ""
    _, dropped = unmet(req, t.outbound.name, model)
    return ",".join(param(t.inbound.name, name) for name in dropped)


def reply_bytes(t: Translation, reply: GenReply) -> bytes:
    return orjson.dumps(t.inbound.encode_reply(reply))


class TranslatingRelay:
    def __init__(
        self, t: Translation, *, include_usage: bool, redactor: Redactor, model: str = ""
    ) -> None:
        self._decoder = t.outbound.stream_decoder()
        self._encoder = t.inbound.stream_encoder(include_usage=include_usage)
        self._redact = redactor.redact
        self._model = model  # for a wire whose stream names none (Bedrock ConverseStream)
        self.usage: Usage | None = None
        self.content_events = 0
        self.saw_done = False
        self.torn = False
        self.upstream_error: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        return self._out(self._decoder.feed(chunk))

    def tail(self) -> bytes:
        events = self._decoder.close()
        if events and isinstance(events[-1], StreamError) and not self.saw_done:
            # Cut short: the dispatcher ends the stream with its own error event.
            self.torn = True
            events.pop()
        return self._out(events)

    def error_event(self, message: str, code: str) -> bytes:
        return self._encoder.encode(StreamError(message, type=code))

    def commit(self) -> None:
        """This relay's stream is the one the client gets (not a hedge's loser):
        an encoder that keeps what it answered (a stored Response) may keep it."""
        commit = getattr(self._encoder, "commit", None)
        if commit is not None:
            commit()

    def _out(self, events: list[StreamEvent]) -> bytes:
        if not events or self.saw_done:
            return b""
        out = []
        for event in events:
            if isinstance(event, TextDelta | ToolArgsDelta | ReasoningDelta):
                self.content_events += 1
            elif isinstance(event, StreamEnd):
                if event.usage is not None:
                    self.usage = event.usage
                self.saw_done = True
            elif isinstance(event, StreamError):
                self.upstream_error = {"message": event.message, "type": event.type}
                self.saw_done = True
            elif isinstance(event, StreamStart) and not event.model:
                event.model = self._model
            out.append(self._encoder.encode(event))
            if self.saw_done:
                break  # nothing after the end reaches the client
        return self._redact(b"".join(out))


# Pass-through events that only carry content (Anthropic's deltas and pings;
# every Responses event named `*.delta` is matched by its suffix).
_SKIPPED = frozenset({b"content_block_delta", b"ping"})
# Of a Responses stream only its end carries what is metered (the usage, the
# status, an error; `created` opens it): item and part events are relayed
# undecoded, only checked to be JSON objects.
_RESPONSES_METERED = frozenset(
    {
        b"response.created",
        b"response.completed",
        b"response.incomplete",
        b"response.failed",
        b"error",
    }
)


class PassThroughRelay:
    """Relays the upstream's events as they came, up to the first garbled one
    (data that is not a JSON object): that one and everything after it are
    dropped and `torn` set, so the dispatcher ends the stream with the client's
    error event and a 502 row, as for a stream cut short."""

    def __init__(self, protocol: WireProtocol, *, redactor: Redactor) -> None:
        codec = codec_for(protocol)
        self._decoder = codec.stream_decoder()
        self._encoder = codec.stream_encoder(include_usage=False)
        self._redact = redactor.redact
        self._ends_only = protocol is WireProtocol.OPENAI_RESPONSES
        self._delta = _DELTA if not self._ends_only else _TEXT_DELTA
        self._at = len(self._delta)
        self._buf = b""
        self._stopped = False
        self.usage: Usage | None = None
        self.content_events = 0
        self.saw_done = False
        self.torn = False
        self.upstream_error: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        if self._stopped:
            return b""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._buf + chunk if self._buf else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buf = data
            return b""
        self._buf = data[end + 2 :]
        complete = data[: end + 2]
        # The usual read, one content delta (one `data:` line): counted and
        # checked to be a JSON object without the walk over events.
        if complete.startswith(self._delta) and complete.find(b"\n", self._at) == end:
            try:
                if type(orjson.loads(complete[self._at : end])) is dict:
                    self.content_events += 1
                    return self._redact(complete)
            except orjson.JSONDecodeError:
                pass
        wanted, cut = self._skim(complete)
        if wanted and self._meter(self._decoder.feed(wanted)):
            cut = self._garbled_kept(complete, cut)
        if cut >= 0:  # nothing from the garbled event on reaches the client
            self._stopped = True
            # Garbage after the end, or after the upstream's error, is only dropped.
            self.torn = not self.saw_done and self.upstream_error is None
            self._buf = b""
            complete = complete[:cut]
            if not complete:
                return b""
        return self._redact(complete)

    def _skim(self, complete: bytes) -> tuple[bytes, int]:
        """The events the decoder must read (starts, ends, usage, errors), and
        where the first garbled event it skipped begins (-1: none). Content
        deltas, most of a stream, and a Responses stream's item events carry
        nothing to meter: they are only checked to be JSON objects (and deltas
        counted), and the client gets their bytes untouched."""
        kept: list[bytes] = []
        blocks = complete.split(b"\n\n")
        for i, block in enumerate(blocks):
            if not block.startswith(b"event:"):
                if block:
                    kept.append(block)
                continue
            line = block.find(b"\n")
            name = block[6:line].strip() if line > 0 else b""
            if name in _SKIPPED or name.endswith(b".delta"):
                self.content_events += name != b"ping"
            elif self._ends_only and name not in _RESPONSES_METERED:
                pass
            else:
                kept.append(block)
                continue
            # The usual shape, one `data:` line after the `event:` line, is read
            # as it is; any other (or no JSON object) is looked at again.
            if block.startswith(b"data: ", line + 1):
                try:
                    if type(orjson.loads(block[line + 7 :])) is dict:
                        continue
                except orjson.JSONDecodeError:
                    pass
            if not _is_object(block):
                return _joined(kept), sum(len(b) + 2 for b in blocks[:i])
        return _joined(kept), -1

    def _garbled_kept(self, complete: bytes, cut: int) -> int:
        """The decoder stopped at an error: where the first garbled event of
        `complete` begins (else `cut`). Unless the upstream's own error event came
        before it, the garbled one is what stopped the decoder, and the error is
        Forebay's to report rather than the upstream's. Seldom runs."""
        at = 0
        theirs = False
        for block in complete[: cut if cut >= 0 else len(complete)].split(b"\n\n"):
            frame = parse_frame(block) if block else None
            if frame is not None:
                if frame[1] != b"[DONE]" and json_of(frame[1]) is None:
                    if not theirs:
                        self.upstream_error = None
                    return at
                theirs = theirs or frame[0] in _UPSTREAM_ERRORS
            at += len(block) + 2
        return cut

    def tail(self) -> bytes:
        rest, self._buf = self._buf.strip(), b""
        if not rest or self._stopped:
            return b""
        frame = parse_frame(rest)
        if frame is None or json_of(frame[1]) is None:
            self.torn = True
            return b""
        event = rest + b"\n\n"
        self._meter(self._decoder.feed(event))
        return self._redact(event)

    def error_event(self, message: str, code: str) -> bytes:
        return self._encoder.encode(StreamError(message, type=code))

    def _meter(self, events: list[StreamEvent]) -> bool:
        """True when the decoder stopped at an error."""
        failed = False
        for event in events:
            if isinstance(event, TextDelta | ToolArgsDelta | ReasoningDelta):
                self.content_events += 1
            elif isinstance(event, StreamEnd):
                if event.usage is not None:
                    self.usage = event.usage
                self.saw_done = True
            elif isinstance(event, StreamError):
                self.upstream_error = {"message": event.message, "type": event.type}
                failed = True
        return failed


# The start of the commonest content delta of each stream.
_DELTA = b"event: content_block_delta\ndata: "
_TEXT_DELTA = b"event: response.output_text.delta\ndata: "
# The upstream's own mid-stream errors (a garbled event after one is not ours to report).
_UPSTREAM_ERRORS = frozenset({b"error", b"response.failed"})


def _is_object(block: bytes) -> bool:
    frame = parse_frame(block)
    return frame is not None and json_of(frame[1]) is not None


def _joined(blocks: list[bytes]) -> bytes:
    return b"\n\n".join(blocks) + b"\n\n" if blocks else b""
