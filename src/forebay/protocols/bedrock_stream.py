"""ConverseStream replies (AWS event-stream frames) as canonical stream events.

Frames are decoded by botocore's EventStreamBuffer, which checks both CRCs
and bounds header and payload sizes. Each frame names its event in
`:event-type` (messageStart, contentBlockStart, contentBlockDelta,
contentBlockStop, messageStop, metadata); `:message-type` "exception" carries
a modelled error (`:exception-type`, a JSON `message`), "error" an unmodelled
one (`:error-code`, `:error-message`). Text and reasoning blocks have no
contentBlockStart: their first delta opens them. `metadata` (usage) is the
last event, so StreamEnd is sent with it.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError  # type: ignore[import-untyped]

from forebay.protocols.bedrock_converse import decode_usage, stop_reason
from forebay.protocols.canonical import (
    PartStart,
    PartStop,
    ReasoningDelta,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolArgsDelta,
    Usage,
)
from forebay.protocols.wire_values import as_str, new_id

_EXCEPTION_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "validationException": 400,
    "internalServerException": 502,
    "modelStreamErrorException": 502,
}


class ConverseStreamDecoder:
    def __init__(self) -> None:
        self._frames = EventStreamBuffer()
        self._done = False
        self._started = False
        self._index: dict[int, int] = {}  # Bedrock's contentBlockIndex -> ours, in order
        self._open: set[int] = set()  # our indexes still open
        self._stop: StopReason | None = None
        self._usage: Usage | None = None

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._done:
            return out
        self._frames.add_data(chunk)
        try:
            for frame in self._frames:
                self._frame(frame.headers, frame.payload, out)
                if out and isinstance(out[-1], StreamError | StreamEnd):
                    break
        except ParserError as exc:  # a CRC mismatch, impossible lengths, duplicate headers
            out.append(
                self._fail(f"the upstream sent a broken event-stream frame ({type(exc).__name__})")
            )
        return out

    def close(self) -> list[StreamEvent]:
        if self._done:
            return []
        self._done = True
        if self._stop is None:
            return [StreamError("the upstream's stream ended before it said why it stopped")]
        out: list[StreamEvent] = [PartStop(i) for i in sorted(self._open)]
        out.append(StreamEnd(self._stop, self._usage))  # no metadata event came
        return out

    # ------------------------------------------------------------ internals

    def _fail(
        self, message: str, *, type: str = "upstream_stream_error", status: int = 502
    ) -> StreamError:
        self._done = True
        return StreamError(message[:500], type=type, status=status)

    def _frame(self, headers: dict[str, Any], payload: bytes, out: list[StreamEvent]) -> None:
        kind = headers.get(":message-type")
        if kind == "error":
            code = as_str(headers.get(":error-code")) or "upstream_stream_error"
            message = as_str(headers.get(":error-message")) or "the upstream reported an error"
            out.append(self._fail(message, type=code))
            return
        try:
            body = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            out.append(self._fail("the upstream sent an event whose payload is not JSON"))
            return
        if not isinstance(body, dict):
            out.append(self._fail("the upstream sent an event whose payload is not a JSON object"))
            return
        if kind == "exception":
            name = as_str(headers.get(":exception-type")) or "upstream_stream_error"
            message = as_str(body.get("message")) or f"the upstream reported {name}"
            out.append(self._fail(message, type=name, status=_EXCEPTION_STATUS.get(name, 502)))
            return
        if kind != "event":
            out.append(self._fail("the upstream sent a frame of no known message type"))
            return
        self._event(as_str(headers.get(":event-type")), body, out)

    def _event(self, event: str, body: dict[str, Any], out: list[StreamEvent]) -> None:
        if not self._started:
            self._start(out)  # messageStart comes first; a stream that skips it is still read
        if event == "contentBlockStart":
            start = body.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(use, dict):
                self._open_part(body, out, "tool_call", use)
        elif event == "contentBlockDelta":
            self._delta(body, out)
        elif event == "contentBlockStop":
            ours = self._index.get(_block_index(body), -1)
            if ours in self._open:
                self._open.discard(ours)
                out.append(PartStop(ours))
        elif event == "messageStop":
            self._stop = stop_reason(body.get("stopReason"))
        elif event == "metadata":
            self._usage = decode_usage(body.get("usage"))
            if self._stop is not None:
                out.extend(PartStop(i) for i in sorted(self._open))
                self._open.clear()
                out.append(StreamEnd(self._stop, self._usage))
                self._done = True
        # other events (a toolResult start, citations) carry nothing canonical

    def _start(self, out: list[StreamEvent]) -> None:
        self._started = True
        out.append(StreamStart(new_id("bedrock"), ""))

    def _open_part(
        self,
        body: dict[str, Any],
        out: list[StreamEvent],
        kind: Literal["text", "tool_call", "reasoning"],
        use: dict[str, Any] | None = None,
    ) -> int | None:
        block = _block_index(body)
        if block < 0 or block in self._index:
            out.append(self._fail("the upstream sent a content block index out of order"))
            return None
        ours = len(self._index)
        self._index[block] = ours
        self._open.add(ours)
        if use is None:
            out.append(PartStart(ours, kind))
        else:
            out.append(PartStart(ours, kind, as_str(use.get("toolUseId")), as_str(use.get("name"))))
        return ours

    def _delta(self, body: dict[str, Any], out: list[StreamEvent]) -> None:
        delta = body.get("delta")
        if not isinstance(delta, dict):
            return
        block = _block_index(body)
        ours = self._index.get(block)
        if "text" in delta:
            if ours is None:
                ours = self._open_part(body, out, "text")
            if ours is not None:
                out.append(TextDelta(ours, as_str(delta["text"])))
        elif isinstance(delta.get("toolUse"), dict):
            if ours is None:
                out.append(self._fail("the upstream sent tool input for a block it never started"))
                return
            out.append(ToolArgsDelta(ours, as_str(delta["toolUse"].get("input"))))
        elif isinstance(delta.get("reasoningContent"), dict):
            if ours is None:
                ours = self._open_part(body, out, "reasoning")
            if ours is None:
                return
            r = delta["reasoningContent"]
            out.append(
                ReasoningDelta(
                    ours,
                    as_str(r.get("text")),
                    as_str(r.get("signature")) or None,
                    as_str(r.get("redactedContent")) or None,
                )
            )


def _block_index(body: dict[str, Any]) -> int:
    index = body.get("contentBlockIndex")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 1 << 20:
        return index
    return -1
