"""A native Responses upstream's event stream (OpenAI, Azure) -> canonical events.

The events are those openai_responses_stream.py writes. Anything that is not
such a stream (a garbled event, a delta for an item never announced, content
before response.created, an end before response.completed) becomes a
StreamError, never an exception. Hosted-tool items and their events have no
canonical form and are skipped.
"""

from __future__ import annotations

from typing import Any

import orjson

from forebay.protocols.canonical import (
    PartStart,
    PartStop,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolArgsDelta,
)
from forebay.protocols.openai_responses_reply import stop_of, usage_of
from forebay.protocols.sse import SseDecoder


class ResponsesStreamDecoder(SseDecoder):
    CUT_SHORT = "The upstream's Responses stream ended before response.completed."

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._next = 0
        self._index: dict[tuple[Any, ...], int] = {}  # ("item", oi) / ("part", oi, ci) -> index
        self._open: set[int] = set()
        self._args: set[int] = set()  # tool calls whose arguments arrived as deltas
        self._summary: dict[int, int] = {}  # reasoning index -> last summary index seen
        self._tool_calls = False
        self._refused = False

    def _whole(self, data: bytes) -> bool:
        return True  # a last event without its blank line is read, and fails if garbled

    def _fail(self, out: list[StreamEvent], why: str) -> None:
        self._ended = True
        out.append(StreamError(f"The upstream's Responses stream is malformed: {why}."))

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        if not data or data == b"[DONE]":
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail(out, "an event's data is not JSON")
            return
        if not isinstance(obj, dict):
            self._fail(out, "an event's data is not an object")
            return
        try:
            self._wire_event(obj, out)
        except (KeyError, TypeError, ValueError, AttributeError):
            self._fail(out, f"a {str(obj.get('type'))[:60]} event lacks its fields")

    def _new(self, key: tuple[Any, ...]) -> int:
        index = self._next
        self._next += 1
        self._index[key] = index
        self._open.add(index)
        return index

    def _stop(self, index: int, out: list[StreamEvent]) -> None:
        if index in self._open:
            self._open.discard(index)
            out.append(PartStop(index))

    def _wire_event(self, obj: dict[str, Any], out: list[StreamEvent]) -> None:
        kind = obj.get("type")
        if kind == "error":
            err: dict[str, Any] = obj["error"] if isinstance(obj.get("error"), dict) else obj
            self._ended = True
            out.append(_error(err, "the upstream reported an error"))
            return
        if kind == "response.created":
            resp = obj["response"]
            self._started = True
            out.append(StreamStart(str(resp["id"]), str(resp.get("model") or "")))
            return
        if not isinstance(kind, str) or not kind.startswith("response."):
            return
        if not self._started:
            self._fail(out, f"{kind[:60]} came before response.created")
            return
        oi = obj.get("output_index")
        if kind == "response.output_item.added":
            item = obj["item"]
            if item["type"] == "function_call":
                index = self._new(("item", oi))
                self._tool_calls = True
                out.append(
                    PartStart(index, "tool_call", item["call_id"], item["name"], item.get("id"))
                )
                if item.get("arguments"):
                    self._args.add(index)
                    out.append(ToolArgsDelta(index, item["arguments"]))
            elif item["type"] == "reasoning":
                out.append(PartStart(self._new(("item", oi)), "reasoning", item_id=item.get("id")))
        elif kind == "response.content_part.added":
            if (
                obj["part"]["type"] in ("output_text", "refusal")
                and ("item", oi) not in self._index
            ):
                out.append(PartStart(self._new(("part", oi, obj["content_index"])), "text"))
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            self._refused |= kind == "response.refusal.delta"
            out.append(TextDelta(self._known(("part", oi, obj["content_index"])), obj["delta"]))
        elif kind == "response.content_part.done":
            key = ("part", oi, obj["content_index"])
            if key in self._index:
                self._stop(self._index[key], out)
        elif kind == "response.function_call_arguments.delta":
            index = self._known(("item", oi))
            self._args.add(index)
            out.append(ToolArgsDelta(index, obj["delta"]))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            index = self._known(("item", oi))
            at = obj.get("summary_index", obj.get("content_index", 0))
            sep = "\n\n" if self._summary.get(index, at) != at else ""
            self._summary[index] = at
            out.append(ReasoningDelta(index, sep + obj["delta"]))
        elif kind == "response.output_item.done":
            self._item_done(obj["item"], oi, out)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._finish(obj["response"], out)

    def _known(self, key: tuple[Any, ...]) -> int:
        if key not in self._index:
            raise ValueError("a delta for an item never announced")
        return self._index[key]

    def _item_done(self, item: dict[str, Any], oi: Any, out: list[StreamEvent]) -> None:
        key = ("item", oi)
        if key not in self._index:
            for k, index in list(self._index.items()):  # a message: its text parts
                if k[0] == "part" and k[1] == oi:
                    self._stop(index, out)
            return
        index = self._index[key]
        if index not in self._open:
            return
        if item["type"] == "function_call" and index not in self._args and item.get("arguments"):
            out.append(ToolArgsDelta(index, item["arguments"]))
        if item["type"] == "reasoning" and isinstance(item.get("encrypted_content"), str):
            out.append(ReasoningDelta(index, redacted=item["encrypted_content"]))
        self._stop(index, out)

    def _finish(self, resp: dict[str, Any], out: list[StreamEvent]) -> None:
        for index in sorted(self._open):
            self._stop(index, out)
        self._ended = True
        if resp.get("status") == "failed":
            err: dict[str, Any] = resp["error"] if isinstance(resp.get("error"), dict) else {}
            out.append(_error(err, "the upstream's response failed"))
            return
        stop = stop_of(resp, tool_calls=self._tool_calls, refused=self._refused)
        out.append(StreamEnd(stop, usage_of(resp.get("usage"))))


def _error(err: dict[str, Any], fallback: str) -> StreamError:
    """The wire's error `code` (server_error, rate_limit_exceeded...) is kept as the
    type, so a Chat client sees it as its error's code rather than a generic one."""
    code = err.get("code")
    kind = code[:100] if isinstance(code, str) and code else "upstream_stream_error"
    return StreamError(str(err.get("message") or fallback)[:1000], type=kind)
