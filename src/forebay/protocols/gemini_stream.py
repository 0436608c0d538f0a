"""Gemini's `streamGenerateContent?alt=sse` as canonical stream events.

Each SSE event is a whole GenerateContentResponse holding the next slice of
the candidate: text arrives in pieces, a function call whole, usage
(cumulative) in every chunk and `finishReason` in the last. There is no end
marker: the stream ends at EOF, so StreamEnd is sent from `close()`, and a
stream that ends before any finishReason was cut short. An error after the
stream started arrives as an event `{"error": {...}}`.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from forebay.protocols.canonical import (
    PartStart,
    PartStop,
    ReasoningDelta,
    ReasoningPart,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ToolArgsDelta,
    ToolCallPart,
    Usage,
)
from forebay.protocols.gemini import blocked, decode_part, decode_usage, finish
from forebay.protocols.wire_values import as_list, as_str, new_id

MAX_EVENT_BYTES = 16 << 20  # one event larger than this is not a Gemini chunk
_STATUS = {
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INVALID_ARGUMENT": 400,
}


class GeminiStreamDecoder:
    def __init__(self) -> None:
        self._buf = b""
        self._done = False  # failed, or ended
        self._started = False
        self._index = -1  # the last part opened
        self._open: Literal["text", "reasoning"] | None = None  # a part still taking deltas
        self._calls = 0
        self._finish: Any = None
        self._block: StopReason | None = None
        self._usage: Usage | None = None
        self._junk = b""  # bytes outside any `data:` line (an error body, or garbage)

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        if self._done:
            return []
        self._buf = (self._buf + chunk).replace(b"\r\n", b"\n")
        out: list[StreamEvent] = []
        while not self._done:
            end = self._buf.find(b"\n\n")
            if end < 0:
                break
            block, self._buf = self._buf[:end], self._buf[end + 2 :]
            self._event(block, out)
        if not self._done and len(self._buf) > MAX_EVENT_BYTES:
            out.append(self._fail("the upstream sent an SSE event larger than 16 MB"))
        return out

    def close(self) -> list[StreamEvent]:
        if self._done:
            return []
        out: list[StreamEvent] = []
        if self._buf.strip():
            self._event(self._buf, out)  # a last event without its blank line
            self._buf = b""
            if out and isinstance(out[-1], StreamError):
                return out
        if self._junk.strip():
            out.append(self._junk_error())
            return out
        stop = finish(self._finish, self._calls) or self._block
        if stop is None:
            out.append(self._fail("the upstream's stream ended before it said why it stopped"))
            return out
        self._close_part(out)
        out.append(StreamEnd(stop, self._usage))
        self._done = True
        return out

    # ------------------------------------------------------------ internals

    def _fail(
        self, message: str, *, type: str = "upstream_stream_error", status: int = 502
    ) -> StreamError:
        self._done = True
        return StreamError(message, type=type, status=status)

    def _event(self, block: bytes, out: list[StreamEvent]) -> None:
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif line and not line.startswith((b":", b"event:", b"id:", b"retry:")):
                self._junk += line + b"\n"  # not SSE: an error body printed as JSON lines
        if not data:
            return
        try:
            obj = orjson.loads(b"\n".join(data))
        except orjson.JSONDecodeError:
            out.append(self._fail("the upstream sent an SSE event that is not JSON"))
            return
        if not isinstance(obj, dict):
            out.append(self._fail("the upstream sent an SSE event that is not a JSON object"))
            return
        if "error" in obj:
            out.append(_error_event(obj["error"], self))
            return
        self._chunk(obj, out)

    def _chunk(self, obj: dict[str, Any], out: list[StreamEvent]) -> None:
        if not self._started:
            self._started = True
            out.append(
                StreamStart(
                    as_str(obj.get("responseId")) or new_id("gemini"),
                    as_str(obj.get("modelVersion")),
                )
            )
        usage = decode_usage(obj.get("usageMetadata"))
        if usage is not None:
            self._usage = usage  # cumulative: the last one counts
        self._block = blocked(obj) or self._block
        candidates = as_list(obj.get("candidates"))
        cand = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        content = cand.get("content")
        for raw in as_list(content.get("parts")) if isinstance(content, dict) else []:
            if not isinstance(raw, dict):
                out.append(self._fail("the upstream sent a part that is not a JSON object"))
                return
            for part in decode_part(raw, self._calls):
                self._part(part, out)
        if cand.get("finishReason"):
            self._finish = cand["finishReason"]

    def _part(self, part: object, out: list[StreamEvent]) -> None:
        if isinstance(part, TextPart):
            if self._open != "text":
                self._start(out, "text")
            out.append(TextDelta(self._index, part.text))
        elif isinstance(part, ReasoningPart):
            if self._open != "reasoning" or not part.text:
                self._start(out, "reasoning")  # a bare signature is a part of its own
            out.append(ReasoningDelta(self._index, part.text, part.signature))
            if part.signature:
                self._close_part(out)  # a signature ends its thought
        elif isinstance(part, ToolCallPart):
            self._calls += 1
            self._close_part(out)
            self._index += 1
            out.append(PartStart(self._index, "tool_call", part.id, part.name))
            out.append(ToolArgsDelta(self._index, part.arguments))
            out.append(PartStop(self._index))

    def _start(self, out: list[StreamEvent], kind: Literal["text", "reasoning"]) -> None:
        self._close_part(out)
        self._index += 1
        self._open = kind
        out.append(PartStart(self._index, kind))

    def _close_part(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            out.append(PartStop(self._index))
            self._open = None

    def _junk_error(self) -> StreamError:
        try:
            obj = orjson.loads(self._junk)
        except orjson.JSONDecodeError:
            return self._fail("the upstream's stream held bytes that are not SSE")
        if isinstance(obj, dict) and "error" in obj:
            return _error_event(obj["error"], self)
        return self._fail("the upstream's stream held bytes that are not SSE")


def _error_event(err: Any, decoder: GeminiStreamDecoder) -> StreamError:
    """Google's error object `{code, message, status}` as a StreamError."""
    err = err if isinstance(err, dict) else {}
    status_word = as_str(err.get("status"))
    code = err.get("code")
    status = _STATUS.get(status_word) or (
        code if isinstance(code, int) and 400 <= code < 600 else 502
    )
    message = as_str(err.get("message"))[:500] or "the upstream reported an error mid-stream"
    return decoder._fail(
        message, type=status_word.lower() or "upstream_stream_error", status=status
    )
