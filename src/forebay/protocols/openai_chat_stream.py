"""Chat Completions streams: `data: {chat.completion.chunk}` events, the
usage-only chunk (`choices: []`) that `stream_options.include_usage` adds,
then `data: [DONE]`.

Decoding: a chunk's delta may carry text, reasoning (`reasoning_content`, or
`reasoning` as some servers name it) and tool-call fragments keyed by their
`index`; each becomes a canonical part, and a part is stopped when another
starts (Chat servers send one at a time), so encoders of block-structured
wires (Anthropic) see whole blocks. An `{"error": ...}` event becomes a
StreamError; so does a stream that ends inside an event or before its end.
Signed reasoning comes as openai_chat_reasoning.py has it: a tool call's first
fragment may carry its Gemini signature (`extra_content`), which becomes a
reasoning part just before the call's, and a delta's `thinking_blocks` sign or
add reasoning parts. Both are looked at only when present.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from forebay.protocols.canonical import (
    PartStart,
    PartStop,
    ReasoningDelta,
    ReasoningPart,
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
from forebay.protocols.openai_chat_reasoning import (
    block_of,
    call_signature,
    extra_content,
    read_block,
    read_call_signature,
)
from forebay.protocols.openai_chat_terms import finish_reason, stop_of, usage_body, usage_of
from forebay.protocols.sse import SseDecoder, data_event, json_of

DONE = b"[DONE]"


class ChatStreamDecoder(SseDecoder):
    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._open: int | None = None  # the part being streamed
        self._next = 0
        self._text: int | None = None
        self._reasoning: int | None = None
        self._said: int | None = None  # the reasoning part that had reasoning_content
        self._tools: dict[int, int] = {}  # Chat's tool-call index -> part index
        self._stop: StopReason | None = None
        self._usage: Usage | None = None

    def _whole(self, data: bytes) -> bool:
        return data == DONE or json_of(data) is not None

    def _eof(self, out: list[StreamEvent]) -> None:
        if self._stop is None:
            super()._eof(out)
        else:  # a finish_reason and no [DONE]: some servers end so
            self._end(out)

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        if data == DONE:
            self._end(out)
            return
        obj = json_of(data)
        if obj is None:
            self._ended = True
            out.append(StreamError("the upstream sent an event that is not a JSON object"))
            return
        error = obj.get("error")
        if error is not None:
            self._ended = True
            err = error if isinstance(error, dict) else {"message": str(error)}
            out.append(
                StreamError(
                    str(err.get("message") or "the upstream reported an error mid-stream"),
                    type=str(err.get("type") or "upstream_stream_error"),
                )
            )
            return
        if not self._started:
            self._started = True
            out.append(StreamStart(str(obj.get("id") or ""), str(obj.get("model") or "")))
        usage = usage_of(obj.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _choice(self, choice: dict[str, Any], out: list[StreamEvent]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._reasoning = self._said = self._switch(self._reasoning, "reasoning", out)
                out.append(ReasoningDelta(self._reasoning, reasoning))
            blocks = delta.get("thinking_blocks")
            if blocks is not None:
                self._blocks(blocks, out)
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text = self._switch(self._text, "text", out)
                out.append(TextDelta(self._text, text))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if finish is not None:
            self._stop = stop_of(finish, choice.get("stop_reason"))

    def _tool_call(self, call: dict[str, Any], out: list[StreamEvent]) -> None:
        key = call.get("index", len(self._tools))
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(fn, dict)
        index = self._tools.get(key) if isinstance(key, int) else None
        if index is None:
            signature = read_call_signature(call)
            if signature is not None:  # Gemini's: a part of its own, before its call
                out.append(ReasoningDelta(self._start("reasoning", out), signature=signature))
            index = self._start(
                "tool_call",
                out,
                tool_call_id=str(call.get("id") or f"call_{len(self._tools)}"),
                tool_name=str(fn.get("name") or ""),
            )
            self._tools[key if isinstance(key, int) else -1] = index
        elif index != self._open:
            self._stop_open(out)
            self._open = index  # a late fragment: its part is reopened, not restarted
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out.append(ToolArgsDelta(index, args))

    def _blocks(self, blocks: Any, out: list[StreamEvent]) -> None:
        """LiteLLM's `thinking_blocks`: a signature ends the reasoning part it
        signs, whose text came as `reasoning_content` (the block repeats it) or,
        from a server that sends none, in the blocks themselves; redacted
        thinking is a part of its own."""
        for raw in blocks if isinstance(blocks, list) else ():
            part = read_block(raw)
            if part is None:
                continue
            if part.redacted is not None:
                self._start("reasoning", out, redacted=part.redacted)
                self._stop_open(out)
                continue
            said = self._reasoning is not None and self._said == self._reasoning == self._open
            self._reasoning = self._switch(self._reasoning, "reasoning", out)
            text = "" if said else part.text
            if text or part.signature:
                out.append(ReasoningDelta(self._reasoning, text, part.signature))
            if part.signature:
                self._stop_open(out)

    def _switch(
        self, index: int | None, kind: Literal["text", "reasoning"], out: list[StreamEvent]
    ) -> int:
        if index is not None and index == self._open:
            return index
        return self._start(kind, out)

    def _start(
        self, kind: Literal["text", "tool_call", "reasoning"], out: list[StreamEvent], **kw: Any
    ) -> int:
        self._stop_open(out)
        index = self._next
        self._next += 1
        self._open = index
        out.append(PartStart(index, kind, **kw))
        return index

    def _stop_open(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            out.append(PartStop(self._open))
            self._open = None
            self._text = self._reasoning = None

    def _end(self, out: list[StreamEvent]) -> None:
        self._ended = True
        if not self._started:
            out.append(StreamStart("", ""))
        self._stop_open(out)
        out.append(StreamEnd(self._stop or StopReason(Stop.END), self._usage))


class ChatStreamEncoder:
    def __init__(self, *, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._head: dict[str, Any] = {"id": "", "object": "chat.completion.chunk"}
        self._tools: dict[int, int] = {}  # part index -> Chat tool-call index
        self._reasoning: dict[int, ReasoningPart] = {}  # reasoning parts still open
        self._pending: ReasoningPart | None = None  # a signed part whose place is not known yet

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return data_event({**self._head, "choices": [choice]})

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ToolArgsDelta):
            call = {"index": self._tools.get(event.index, 0), "function": {"arguments": event.json}}
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, ReasoningDelta):
            part = self._reasoning.get(event.index)
            if part is not None:
                part.text += event.text
                part.signature = event.signature or part.signature
                part.redacted = event.redacted or part.redacted
            return self._chunk({"reasoning_content": event.text}) if event.text else b""
        if isinstance(event, PartStart):
            if event.kind == "reasoning":
                self._reasoning[event.index] = ReasoningPart(redacted=event.redacted)
            if event.kind != "tool_call":
                return self._flush()
            self._tools[event.index] = n = len(self._tools)
            call = {
                "index": n,
                "id": event.tool_call_id,
                "type": "function",
                "function": {"name": event.tool_name, "arguments": ""},
            }
            pending, self._pending = self._pending, None
            sig = call_signature(pending) if pending is not None else None
            if sig is not None:  # Gemini's convention: the signature rides on its call
                call["extra_content"] = extra_content(sig)
            head = self._flush(pending) if sig is None and pending is not None else b""
            return head + self._chunk({"tool_calls": [call]})
        if isinstance(event, PartStop):
            part = self._reasoning.pop(event.index, None)
            if part is None or not (part.signature or part.redacted is not None):
                return b""
            out = self._flush()
            self._pending = part  # its block goes out once the next part shows its place
            return out
        if isinstance(event, StreamStart):
            self._head = {
                "id": event.id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": event.model,
            }
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, StreamEnd):
            out = self._flush() + self._chunk({}, finish_reason(event.stop))
            if self._include_usage and event.usage is not None:
                out += data_event({**self._head, "choices": [], "usage": usage_body(event.usage)})
            return out + b"data: [DONE]\n\n"
        assert isinstance(event, StreamError)
        return error_event(event.message, event.type)

    def _flush(self, part: ReasoningPart | None = None) -> bytes:
        """A signed reasoning part that is not a tool call's, as a thinking block."""
        if part is None:
            part, self._pending = self._pending, None
        if part is None:
            return b""
        return self._chunk({"thinking_blocks": [block_of(part)]})


def error_event(message: str, code: str) -> bytes:
    """The error a Chat client gets mid-stream, as Forebay has always sent it."""
    body = orjson.dumps(
        {"error": {"message": message, "type": "upstream_error", "code": code, "param": None}}
    )
    return b"data: " + body + b"\n\n" + DONE_EVENT


DONE_EVENT = b"data: [DONE]\n\n"
