"""A zero-delay upstream for overhead benchmarks: OpenAI Chat Completions,
OpenAI Responses and Anthropic Messages.

One process, one event loop (uvloop when installed), a raw `asyncio.Protocol`
with the httptools parser, and answers that are pre-built bytes: the cheapest
server that still speaks real HTTP/1.1 keep-alive, so whatever a gateway adds on
top of it shows up in the measurements instead of being hidden by the upstream.

* `POST /v1/chat/completions` (and `/v1/completions`): a JSON completion with
  `usage`; with `"stream": true` an SSE stream (chunked transfer encoding) of
  `--chunks` content events, a finish event, a usage-only event and `[DONE]`.
  Each event is written on its own loop turn so a relay sees separate reads, as
  it would from a model server (`--one-write` sends the whole stream at once).
* `POST /v1/messages` (Anthropic Messages): a `message` with `usage`; streamed,
  Anthropic's documented sequence: `message_start`, `content_block_start`,
  `ping`, `--chunks` `content_block_delta` (text_delta) events,
  `content_block_stop`, `message_delta` (stop_reason, usage) and `message_stop`,
  each as `event: <type>` + `data: {"type": <type>, ...}`.
* `POST /v1/responses` (OpenAI Responses): a `response` object with `usage`;
  streamed, the documented semantic events with their `sequence_number`s:
  `response.created`, `response.in_progress`, `response.output_item.added`,
  `response.content_part.added`, `--chunks` `response.output_text.delta`,
  `response.output_text.done`, `response.content_part.done`,
  `response.output_item.done` and `response.completed` (with `usage`).
* `GET /v1/models`: one model, `zero`.
* Anything else: 404.

Run: `python bench/zero_upstream.py --port 9000 [--chunks 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from collections.abc import Callable
from typing import cast

import httptools

MODEL = "zero"
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')


def _http(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


CHAT_BODY = (
    b'{"id":"chatcmpl-zero","object":"chat.completion","created":1700000000,'
    b'"model":"zero","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello! How can I help you today?"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
)
TEXT_BODY = (
    b'{"id":"cmpl-zero","object":"text_completion","created":1700000000,"model":"zero",'
    b'"choices":[{"index":0,"text":" Hello there.","finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}'
)
MODELS_BODY = b'{"object":"list","data":[{"id":"zero","object":"model","owned_by":"bench"}]}'
NOT_FOUND = _http(b"404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_events(chunks: int) -> list[bytes]:
    """The SSE events of one streamed chat completion, each HTTP-chunk framed."""
    return [_chunk(e) for e in chat_events(chunks)] + [b"0\r\n\r\n"]


def chat_events(chunks: int) -> list[bytes]:
    """The SSE events of one streamed chat completion."""
    pre = b'data: {"id":"chatcmpl-zero","object":"chat.completion.chunk","created":1700000000,'
    pre += b'"model":"zero","choices":['
    events = [pre + b'{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n']
    events += [
        pre + b'{"index":0,"delta":{"content":"tok%d "},"finish_reason":null}]}\n\n' % i
        for i in range(chunks)
    ]
    events.append(pre + b'{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    events.append(
        pre + b'],"usage":{"prompt_tokens":12,"completion_tokens":%d,'
        b'"total_tokens":%d}}\n\n' % (chunks, chunks + 12)
    )
    events.append(b"data: [DONE]\n\n")
    return events


# --- Anthropic Messages ------------------------------------------------------------------------


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _named(kind: str, data: dict[str, object]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _compact(data) + b"\n\n"


TEXT = "Hello! How can I help you today?"


def _message(
    content: list[dict[str, object]], stop: str | None, output_tokens: int
) -> dict[str, object]:
    return {
        "id": "msg_zero",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        },
    }


def messages_body() -> bytes:
    return _compact(_message([{"type": "text", "text": TEXT}], "end_turn", 9))


def messages_events(chunks: int) -> list[bytes]:
    """One streamed message, as Anthropic's streaming reference lays it out."""
    events = [
        _named("message_start", {"type": "message_start", "message": _message([], None, 1)}),
        _named(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _named("ping", {"type": "ping"}),
    ]
    events += [
        _named(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"tok{i} "},
            },
        )
        for i in range(chunks)
    ]
    events += [
        _named("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _named(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
        ),
        _named("message_stop", {"type": "message_stop"}),
    ]
    return events


# --- OpenAI Responses --------------------------------------------------------------------------


def _output_text(text: str) -> dict[str, object]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _item(status: str, content: list[dict[str, object]]) -> dict[str, object]:
    return {
        "id": "msg_zero",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _response(
    status: str, output: list[dict[str, object]], output_tokens: int | None
) -> dict[str, object]:
    usage = None
    if output_tokens is not None:
        usage = {
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 12 + output_tokens,
        }
    return {
        "id": "resp_zero",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": 16,
        "model": MODEL,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def responses_body() -> bytes:
    return _compact(_response("completed", [_item("completed", [_output_text(TEXT)])], 9))


def responses_events(chunks: int) -> list[bytes]:
    """One streamed response: the Responses API's semantic events, numbered."""
    text = "".join(f"tok{i} " for i in range(chunks))
    at = {"item_id": "msg_zero", "output_index": 0, "content_index": 0}
    done_item = _item("completed", [_output_text(text)])
    bodies: list[tuple[str, dict[str, object]]] = [
        ("response.created", {"response": _response("in_progress", [], None)}),
        ("response.in_progress", {"response": _response("in_progress", [], None)}),
        ("response.output_item.added", {"output_index": 0, "item": _item("in_progress", [])}),
        ("response.content_part.added", {**at, "part": _output_text("")}),
    ]
    bodies += [
        ("response.output_text.delta", {**at, "delta": f"tok{i} ", "logprobs": []})
        for i in range(chunks)
    ]
    bodies += [
        ("response.output_text.done", {**at, "text": text, "logprobs": []}),
        ("response.content_part.done", {**at, "part": _output_text(text)}),
        ("response.output_item.done", {"output_index": 0, "item": done_item}),
        ("response.completed", {"response": _response("completed", [done_item], chunks)}),
    ]
    return [
        _named(kind, {"type": kind, "sequence_number": n, **fields})
        for n, (kind, fields) in enumerate(bodies)
    ]


class ZeroProtocol(asyncio.Protocol):
    __slots__ = ("_answers", "_body", "_loop", "_parser", "_transport", "_url")

    def __init__(self, answers: Answers) -> None:
        self._answers = answers
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(BAD_REQUEST)
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        url = self._url.split(b"?", 1)[0]
        if url.endswith(b"/chat/completions"):
            self._generate(transport, self._answers.chat, self._answers.stream)
        elif url.endswith(b"/messages"):
            self._generate(transport, self._answers.messages, self._answers.messages_stream)
        elif url.endswith(b"/responses"):
            self._generate(transport, self._answers.responses, self._answers.responses_stream)
        elif url.endswith(b"/completions"):
            transport.write(self._answers.text)
        elif url.endswith(b"/models"):
            transport.write(self._answers.models)
        else:
            transport.write(NOT_FOUND)
        if not self._parser.should_keep_alive():
            transport.close()

    def _generate(self, transport: asyncio.Transport, whole: bytes, events: list[bytes]) -> None:
        if _STREAM_RE.search(b"".join(self._body)):
            self._stream(transport, events)
        else:
            transport.write(whole)

    def _stream(self, transport: asyncio.Transport, events: list[bytes]) -> None:
        if self._answers.one_write:
            transport.write(STREAM_HEAD + b"".join(events))
            return
        transport.write(STREAM_HEAD)
        call_soon: Callable[..., object] = self._loop.call_soon

        def send(i: int) -> None:
            if transport.is_closing():
                return
            transport.write(events[i])
            if i + 1 < len(events):
                call_soon(send, i + 1)

        send(0)


class Answers:
    def __init__(self, chunks: int, one_write: bool) -> None:
        self.chat = _http(b"200 OK", b"application/json", CHAT_BODY)
        self.text = _http(b"200 OK", b"application/json", TEXT_BODY)
        self.models = _http(b"200 OK", b"application/json", MODELS_BODY)
        self.stream = stream_events(chunks)
        self.messages = _http(b"200 OK", b"application/json", messages_body())
        self.messages_stream = [_chunk(e) for e in messages_events(chunks)] + [b"0\r\n\r\n"]
        self.responses = _http(b"200 OK", b"application/json", responses_body())
        self.responses_stream = [_chunk(e) for e in responses_events(chunks)] + [b"0\r\n\r\n"]
        self.one_write = one_write


async def serve(host: str, port: int, answers: Answers) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ZeroProtocol(answers), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=16, help="content events per stream")
    ap.add_argument("--one-write", action="store_true", help="send each stream in one write")
    args = ap.parse_args()
    answers = Answers(args.chunks, args.one_write)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, answers))
    else:
        uvloop.run(serve(args.host, args.port, answers))


if __name__ == "__main__":
    main()
