"""Anthropic Messages streams: `event: <type>` / `data: {"type": <type>, ...}`.

message_start, then per content block content_block_start, its
content_block_delta events (text_delta, input_json_delta, thinking_delta,
signature_delta) and content_block_stop, then message_delta (stop_reason,
cumulative usage) and message_stop; `ping` at any time, and `error`
(`{"type": "error", "error": {"type", "message"}}`) ends a stream early.
"""

from __future__ import annotations

from typing import Any

import orjson

from forebay.protocols.anthropic_reply import message_id, stop_of, stop_reason, usage_body, usage_of
from forebay.protocols.canonical import (
    PartStart,
    PartStop,
    ReasoningDelta,
    Stop,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolArgsDelta,
    Usage,
)
from forebay.protocols.sse import SseDecoder, json_of, named_event

# The type of each Anthropic error, by the HTTP status it goes with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status == 503:
        return "overloaded_error"
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class MessagesStreamDecoder(SseDecoder):
    CUT_SHORT = "the upstream stream ended before message_stop"

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[int, int] = {}  # Anthropic block index -> part index
        self._usage: Usage | None = None
        self._stop: StopReason | None = None

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        obj = json_of(data)
        if obj is None:
            self._ended = True
            out.append(StreamError("the upstream sent an event that is not a JSON object"))
            return
        kind = obj.get("type")
        if kind == "content_block_delta":
            self._delta(obj, out)
        elif kind == "content_block_start":
            self._start(obj, out)
        elif kind == "content_block_stop":
            index = self._part(obj)
            if index is not None:
                out.append(PartStop(index))
        elif kind == "message_start":
            msg = obj.get("message") if isinstance(obj.get("message"), dict) else {}
            assert isinstance(msg, dict)
            self._usage = usage_of(msg.get("usage"))
            out.append(
                StreamStart(str(msg.get("id") or ""), str(msg.get("model") or ""), self._usage)
            )
        elif kind == "message_delta":
            delta = obj.get("delta") if isinstance(obj.get("delta"), dict) else {}
            assert isinstance(delta, dict)
            if "stop_reason" in delta:
                self._stop = stop_of(delta.get("stop_reason"), delta.get("stop_sequence"))
            self._usage = usage_of(obj.get("usage"), self._usage)
        elif kind == "message_stop":
            self._ended = True
            out.append(StreamEnd(self._stop or StopReason(Stop.END), self._usage))
        elif kind == "error":
            self._ended = True
            err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
            assert isinstance(err, dict)
            status = 529 if err.get("type") == "overloaded_error" else 502
            out.append(
                StreamError(
                    str(err.get("message") or "the upstream reported an error mid-stream"),
                    type=str(err.get("type") or "api_error"),
                    status=status,
                )
            )
        # ping, and event types added after this was written: nothing to carry

    def _part(self, obj: dict[str, Any]) -> int | None:
        at = obj.get("index")
        return self._index.get(at) if isinstance(at, int) else None

    def _start(self, obj: dict[str, Any], out: list[StreamEvent]) -> None:
        block = obj.get("content_block")
        at = obj.get("index")
        if not isinstance(block, dict) or not isinstance(at, int):
            return
        kind = block.get("type")
        index = len(self._index)
        if kind == "text":
            self._index[at] = index
            out.append(PartStart(index, "text"))
            if block.get("text"):
                out.append(TextDelta(index, str(block["text"])))
        elif kind == "tool_use":
            self._index[at] = index
            out.append(PartStart(index, "tool_call", str(block.get("id")), str(block.get("name"))))
            if block.get("input"):  # usually {} and the arguments follow as deltas
                out.append(ToolArgsDelta(index, orjson.dumps(block["input"]).decode()))
        elif kind == "thinking":
            self._index[at] = index
            out.append(PartStart(index, "reasoning"))
        elif kind == "redacted_thinking":
            self._index[at] = index
            out.append(PartStart(index, "reasoning", redacted=str(block.get("data", ""))))
        # server tools' blocks have no canonical form: their events are skipped

    def _delta(self, obj: dict[str, Any], out: list[StreamEvent]) -> None:
        index = self._part(obj)
        delta = obj.get("delta")
        if index is None or not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            out.append(TextDelta(index, str(delta.get("text", ""))))
        elif kind == "input_json_delta":
            out.append(ToolArgsDelta(index, str(delta.get("partial_json", ""))))
        elif kind == "thinking_delta":
            out.append(ReasoningDelta(index, str(delta.get("thinking", ""))))
        elif kind == "signature_delta":
            out.append(ReasoningDelta(index, signature=str(delta.get("signature", ""))))


class MessagesStreamEncoder:
    """Canonical events as an Anthropic client expects them. Blocks are numbered
    in the order they start; one that starts while another is open closes it."""

    def __init__(self) -> None:
        self._blocks: dict[int, int] = {}  # part index -> block index
        self._open: int | None = None
        self._started = False
        self._model = ""

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            delta: dict[str, Any] = {"type": "text_delta", "text": event.text}
            return self._delta(event.index, "text", delta)
        if isinstance(event, ToolArgsDelta):
            delta = {"type": "input_json_delta", "partial_json": event.json}
            return self._delta(event.index, "tool_call", delta)
        if isinstance(event, ReasoningDelta):
            out = b""
            if event.text:
                delta = {"type": "thinking_delta", "thinking": event.text}
                out += self._delta(event.index, "reasoning", delta)
            if event.signature is not None:
                delta = {"type": "signature_delta", "signature": event.signature}
                out += self._delta(event.index, "reasoning", delta)
            return out
        if isinstance(event, PartStart):
            return self._start(event)
        if isinstance(event, PartStop):
            return self._stop(event.index)
        if isinstance(event, StreamStart):
            return self._message_start(event.id, event.model, event.usage)
        if isinstance(event, StreamEnd):
            out = self._message_start("", "", None) + self._stop(self._open)
            usage = usage_body(event.usage or Usage())
            seq = event.stop.sequence if event.stop.kind is Stop.STOP_SEQUENCE else None
            delta = {"stop_reason": stop_reason(event.stop), "stop_sequence": seq}
            out += named_event(
                b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
            )
            return out + named_event(b"message_stop", {"type": "message_stop"})
        assert isinstance(event, StreamError)
        return error_event(event.message, _type_of(event))

    def _message_start(self, msg_id: str, model: str, usage: Usage | None) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(msg_id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_body(usage or Usage()),
        }
        return named_event(
            b"message_start", {"type": "message_start", "message": message}
        ) + named_event(b"ping", {"type": "ping"})

    def _start(self, event: PartStart) -> bytes:
        out = self._message_start("", "", None) + self._stop(self._open)
        n = len(self._blocks)
        self._blocks[event.index] = n
        self._open = event.index
        block: dict[str, Any]
        if event.kind == "text":
            block = {"type": "text", "text": ""}
        elif event.kind == "tool_call":
            block = {"type": "tool_use", "id": event.tool_call_id, "name": event.tool_name}
            block["input"] = {}
        elif event.redacted is not None:
            block = {"type": "redacted_thinking", "data": event.redacted}
        else:
            block = {"type": "thinking", "thinking": "", "signature": ""}
        body = {"type": "content_block_start", "index": n, "content_block": block}
        return out + named_event(b"content_block_start", body)

    def _delta(self, index: int, kind: Any, delta: dict[str, Any]) -> bytes:
        out = b""
        if index not in self._blocks:  # a delta with no PartStart before it
            out = self._start(PartStart(index, kind))
        body = {"type": "content_block_delta", "index": self._blocks[index], "delta": delta}
        return out + named_event(b"content_block_delta", body)

    def _stop(self, index: int | None) -> bytes:
        if index is None or index != self._open:
            return b""
        self._open = None
        body = {"type": "content_block_stop", "index": self._blocks[index]}
        return named_event(b"content_block_stop", body)


def _type_of(event: StreamError) -> str:
    if event.type in ERROR_TYPES.values():
        return event.type
    return error_type(event.status)


def error_event(message: str, kind: str) -> bytes:
    """Anthropic's mid-stream error: the last event of the stream."""
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return named_event(b"error", body)
