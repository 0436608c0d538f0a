"""A zero-delay OpenAI-compatible upstream for overhead benchmarks.

One process, one event loop (uvloop when installed), a raw `asyncio.Protocol`
with the httptools parser, and answers that are pre-built bytes: the cheapest
server that still speaks real HTTP/1.1 keep-alive, so whatever a gateway adds on
top of it shows up in the measurements instead of being hidden by the upstream.

* `POST /v1/chat/completions` (and `/v1/completions`): a JSON completion with
  `usage`; with `"stream": true` an SSE stream (chunked transfer encoding) of
  `--chunks` content events, a finish event, a usage-only event and `[DONE]`.
  Each event is written on its own loop turn so a relay sees separate reads, as
  it would from a model server (`--one-write` sends the whole stream at once).
* `GET /v1/models`: one model, `zero`.
* Anything else: 404.

Run: `python bench/zero_upstream.py --port 9000 [--chunks 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
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
    return [_chunk(e) for e in events] + [b"0\r\n\r\n"]


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
        url = self._url
        if url.endswith(b"/chat/completions"):
            body = b"".join(self._body)
            if _STREAM_RE.search(body):
                self._stream(transport)
            else:
                transport.write(self._answers.chat)
        elif url.endswith(b"/completions"):
            transport.write(self._answers.text)
        elif url.endswith(b"/models"):
            transport.write(self._answers.models)
        else:
            transport.write(NOT_FOUND)
        if not self._parser.should_keep_alive():
            transport.close()

    def _stream(self, transport: asyncio.Transport) -> None:
        answers = self._answers
        if answers.one_write:
            transport.write(answers.stream_all)
            return
        transport.write(STREAM_HEAD)
        events = answers.stream
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
        self.stream_all = STREAM_HEAD + b"".join(self.stream)
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
