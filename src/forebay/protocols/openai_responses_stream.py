"""The Responses API's semantic event stream, both ways.

Encoder (client side): canonical stream events -> `event: <type>` / `data:`
server-sent events with increasing `sequence_number`s, as OpenAI sends them:
response.created, response.in_progress, then per output item
output_item.added, (content_part.added, output_text.delta..., output_text.done,
content_part.done | function_call_arguments.delta..., .done |
reasoning_summary_part.added, reasoning_summary_text.delta..., .done,
reasoning_summary_part.done), output_item.done, and last response.completed /
response.incomplete / response.failed with the whole Response. Each canonical
part is one output item. The final Response is kept in `response`, to be stored.

The decoder (upstream side, for native Responses upstreams) turns the same events back
to canonical ones: openai_responses_stream_decode.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    Usage,
)
from forebay.protocols.openai_responses_items import new_id
from forebay.protocols.openai_responses_reply import (
    ResponseContext,
    response_object,
    status_of,
)


@dataclass(slots=True)
class _Open:
    output_index: int
    item: dict[str, Any]
    chunks: list[str] = field(default_factory=list)
    summary: bool = False  # a reasoning summary part was announced
    redacted: str | None = None
    delta_head: bytes | None = None  # a text delta's bytes after its sequence_number


_TEXT_DELTA = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":'
)


class ResponsesStreamEncoder:
    def __init__(self, ctx: ResponseContext | None = None) -> None:
        self.ctx = ctx or ResponseContext()
        self.response: dict[str, Any] | None = None  # the final Response, once sent
        self._seq = 0
        self._model = ""
        self._usage: Usage | None = None
        self._items: list[dict[str, Any]] = []
        self._open: dict[int, _Open] = {}
        self._started = False
        self._over = False  # an error ended it

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        data = orjson.dumps({"type": kind, "sequence_number": self._seq, **fields})
        self._seq += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        usage = extra.pop("usage", None)
        return response_object(
            self.ctx, self._model, list(self._items), status=status, usage=usage, **extra
        )

    def encode(self, event: StreamEvent) -> bytes:
        if self.response is not None or self._over:
            return b""  # the stream has ended
        out: list[bytes] = []
        if isinstance(event, StreamStart):
            self._start(out, event.model, event.usage)
        elif isinstance(event, StreamError):
            self._fail(out, event)
        else:
            if not self._started:
                self._start(out, "", None)
            if isinstance(event, StreamEnd):
                self._end(out, event)
            else:
                self._part_event(out, event)
        return b"".join(out)

    def _start(self, out: list[bytes], model: str, usage: Usage | None) -> None:
        if self._started:
            return
        self._started, self._model, self._usage = True, model, usage
        self._emit(out, "response.created", response=self._snapshot("in_progress"))
        self._emit(out, "response.in_progress", response=self._snapshot("in_progress"))

    def _part_event(self, out: list[bytes], event: StreamEvent) -> None:
        if isinstance(event, PartStart):
            self._open_part(out, event)
            return
        index = getattr(event, "index", None)
        part = self._open.get(index) if isinstance(index, int) else None
        if part is None:
            return  # a delta for a part never started: nothing a client could place
        if isinstance(event, TextDelta):
            part.chunks.append(event.text)
            # The most frequent event: its bytes are those of _emit's dict, put
            # together from a prefix built once per part.
            if part.delta_head is None:
                at = orjson.dumps({"item_id": part.item["id"], "output_index": part.output_index})
                part.delta_head = b"," + at[1:-1] + b',"content_index":0,"delta":'
            out.append(
                _TEXT_DELTA
                + str(self._seq).encode()
                + part.delta_head
                + orjson.dumps(event.text)
                + b',"logprobs":[]}\n\n'
            )
            self._seq += 1
            return
        ids = {"item_id": part.item["id"], "output_index": part.output_index}
        if isinstance(event, ToolArgsDelta):
            part.chunks.append(event.json)
            self._emit(out, "response.function_call_arguments.delta", **ids, delta=event.json)
        elif isinstance(event, ReasoningDelta):
            if event.redacted is not None:
                part.redacted = event.redacted
            elif event.signature and part.redacted is None:
                part.redacted = event.signature  # Responses has one opaque field for both
            if event.text:
                if not part.summary:
                    part.summary = True
                    blank = {"type": "summary_text", "text": ""}
                    self._emit(
                        out,
                        "response.reasoning_summary_part.added",
                        **ids,
                        summary_index=0,
                        part=blank,
                    )
                part.chunks.append(event.text)
                self._emit(
                    out,
                    "response.reasoning_summary_text.delta",
                    **ids,
                    summary_index=0,
                    delta=event.text,
                )
        elif isinstance(event, PartStop):
            self._close_part(out, event.index, "completed")

    def _open_part(self, out: list[bytes], event: PartStart) -> None:
        if event.index in self._open:
            return
        item: dict[str, Any]
        if event.kind == "text":
            item = {
                "id": new_id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        elif event.kind == "tool_call":
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": event.tool_call_id or new_id("call"),
                "name": event.tool_name or "",
                "arguments": "",
            }
        else:
            item = {"id": event.item_id or new_id("rs"), "type": "reasoning", "summary": []}
        part = _Open(len(self._items), item)
        self._items.append(item)
        self._open[event.index] = part
        self._emit(
            out, "response.output_item.added", output_index=part.output_index, item=dict(item)
        )
        if event.kind == "text":
            blank = {"type": "output_text", "text": "", "annotations": []}
            ids = {"item_id": item["id"], "output_index": part.output_index}
            self._emit(out, "response.content_part.added", **ids, content_index=0, part=blank)

    def _close_part(self, out: list[bytes], index: int, status: str) -> None:
        part = self._open.pop(index, None)
        if part is None:
            return
        item, text = part.item, "".join(part.chunks)
        ids = {"item_id": item["id"], "output_index": part.output_index}
        if item["type"] == "message":
            whole = {"type": "output_text", "text": text, "annotations": []}
            self._emit(
                out, "response.output_text.done", **ids, content_index=0, text=text, logprobs=[]
            )
            self._emit(out, "response.content_part.done", **ids, content_index=0, part=whole)
            item["content"] = [whole]
        elif item["type"] == "function_call":
            self._emit(
                out,
                "response.function_call_arguments.done",
                **ids,
                name=item["name"],
                arguments=text,
            )
            item["arguments"] = text
        else:
            if part.summary:
                self._emit(
                    out, "response.reasoning_summary_text.done", **ids, summary_index=0, text=text
                )
                whole = {"type": "summary_text", "text": text}
                self._emit(
                    out, "response.reasoning_summary_part.done", **ids, summary_index=0, part=whole
                )
                item["summary"] = [whole]
            if part.redacted is not None:
                item["encrypted_content"] = part.redacted
        if "status" in item:
            item["status"] = status
        self._emit(out, "response.output_item.done", output_index=part.output_index, item=item)

    def _end(self, out: list[bytes], event: StreamEnd) -> None:
        status, incomplete, error = status_of(event.stop)
        for index in sorted(self._open):
            self._close_part(out, index, "incomplete" if status != "completed" else "completed")
        if status == "incomplete" and self._items and "status" in self._items[-1]:
            self._items[-1]["status"] = "incomplete"
        usage = event.usage or self._usage
        self.response = self._snapshot(status, usage=usage, incomplete=incomplete, error=error)
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            status, "response.failed"
        )
        self._emit(out, kind, response=self.response)

    def _fail(self, out: list[bytes], event: StreamError) -> None:
        self._emit(out, "error", code=event.type, message=event.message, param=None)
        self._over = True
        if not self._started:
            return
        unsaid: list[bytes] = []  # items cut short are incomplete in the Response, no done events
        seq = self._seq  # ... and no sequence numbers: the client sees no gap
        for index in sorted(self._open):
            self._close_part(unsaid, index, "incomplete")
        self._seq = seq
        error = {"code": "server_error", "message": event.message}
        self.response = self._snapshot("failed", usage=self._usage, error=error)
        self._emit(out, "response.failed", response=self.response)
