"""An upstream that speaks raw bytes on a TCP socket, so it can break HTTP in
ways no framework would: each request is answered with the bytes scripted for
the upstream model name the deployment is configured with, or by a user
message "as <behaviour>", so one deployment can both fail and serve.

Malformed HTTP (the request is read, then):
  bad-status-line   a status line that is not HTTP
  long-header       a 9 KB header line (aiohttp allows 8 KB)
  bad-chunk         chunked encoding with a chunk size that is not hex
  garbage           binary noise instead of a response
  close-in-headers  half a header block, then the connection closes
  close-in-body     Content-Length 200, 20 bytes, then the connection closes
  hang-up           closes the connection without a byte
  not-json          200 with an HTML body
  sse-cut           a stream whose second event is cut off half-way (clean EOF)
  sse-bad-chunk     a chunked stream whose second chunk has a bad size line

Well-formed answers:
  ok                chat completion (or SSE stream); a user message
                    "sleep <ms> ..." is answered after <ms> milliseconds, and
                    prompt_tokens is the message's word count
  echo-secrets-<s>  status <s> whose body repeats every credential it was sent
                    (the bearer token and each x-/api- header) in every encoding
                    in `encodings()` (or only the one named after the behaviour:
                    "as echo-secrets-400 url"); 200 puts them in the content,
                    and streams send one encoding per event
  error-<s>-<shape> status <s> with an error body shaped like `shape`'s server:
                    openai, llamacpp, vllm, vllm-legacy, fastapi, text, invalid
                    (an OpenAI envelope whose type says the request is invalid)

GET /v1/models lists `served`; with `require_key` set, any other bearer token
gets 401. Every request is remembered in `seen`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support.servers import free_port


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


ERROR_MESSAGE = "image input is not supported"


def encodings(secret: str) -> dict[str, str]:
    """A secret as an upstream might echo it: raw, escaped, encoded."""
    raw = secret.encode()
    return {
        "raw": secret,
        "json-slash": secret.replace("/", "\\/"),
        "json-unicode": "".join(f"\\u{ord(c):04x}" for c in secret),
        "json-unicode-upper": "".join(f"\\u{ord(c):04X}" for c in secret),
        "json-mixed": "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(secret)),
        "json-double": "".join(f"\\\\u{ord(c):04x}" for c in secret),
        "url": urllib.parse.quote(secret, safe=""),
        "url-plus": urllib.parse.quote_plus(secret),
        "base64": base64.b64encode(raw).decode(),
        "base64-1": base64.b64encode(b"x" + raw).decode(),
        "base64-2": base64.b64encode(b"xy" + raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
    }


@dataclass
class RawUpstream:
    served: list[str] = field(default_factory=lambda: ["ok"])
    require_key: str | None = None
    seen: list[RawRequest] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def tries(self, model: str) -> int:
        return sum(1 for r in self.seen if r.body.get("model") == model)

    # -- lifecycle -------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        # A connection accepted as the loop stopped has a handler task that has not
        # started: cancelled now, its coroutine would never run (nor close its socket).
        await asyncio.sleep(0)
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def start(self) -> RawUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("raw upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> RawUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one connection ----------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            req = await _read_request(reader)
            if req is None:
                return
            self.seen.append(req)
            await self._answer(req, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, req: RawRequest, w: asyncio.StreamWriter) -> None:
        if req.method == "GET":
            if not req.path.startswith("/v1/"):
                return w.write(_response(404, b"Not Found", "text/plain"))
            if self.require_key and req.headers.get("authorization") != (
                f"Bearer {self.require_key}"
            ):
                sent = req.headers.get("authorization", "")
                body = orjson.dumps({"error": {"message": f"Incorrect API key provided: {sent}"}})
                return w.write(_response(401, body))
            data = [{"id": m, "object": "model"} for m in self.served]
            return w.write(_response(200, orjson.dumps({"object": "list", "data": data})))
        model = str(req.body.get("model", ""))
        words = _text_of(req).split()
        if len(words) >= 2 and words[0] == "as":  # one deployment, many behaviours
            model = words[1]
        stream = bool(req.body.get("stream"))
        scripted = _MALFORMED.get(model)
        if scripted is not None:
            return w.write(scripted)
        if model == "not-json":
            return w.write(_response(200, b"<html>oops</html>", "text/html"))
        if model in ("sse-cut", "sse-bad-chunk"):
            chunked = model == "sse-bad-chunk"
            w.write(
                _SSE_HEAD_CHUNKED + _chunk(_event("Hel")) if chunked else _SSE_HEAD + _event("Hel")
            )
            await w.drain()
            await asyncio.sleep(0.05)  # the first event reaches the client first
            w.write(b"zz\r\nlo\r\n0\r\n\r\n" if chunked else b'data: {"id":"c","choices":[{"del')
            return None
        if model.startswith("echo-secrets-"):
            return await _echo_secrets(req, w, int(model.rsplit("-", 1)[1]), stream)
        if model.startswith("error-"):
            _, status, shape = model.split("-", 2)
            return w.write(_response(int(status), *_error_body(int(status), shape)))
        await _ok(req, w, stream)
        return None


_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
_SSE_HEAD_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)

_MALFORMED: dict[str, bytes] = {
    "bad-status-line": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}",
    "long-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\nContent-Length: 2\r\n\r\n{}",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "garbage": bytes(range(256)) * 4,
    "close-in-headers": b"HTTP/1.1 200 OK\r\nContent-Type: appl",
    "close-in-body": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b'Content-Length: 200\r\n\r\n{"id": "cmpl", "cho',
    "hang-up": b"",
}
MALFORMED_MODELS = (*_MALFORMED, "not-json", "sse-cut", "sse-bad-chunk")


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body: dict[str, Any] = {}
    length = int(headers.get("content-length", "0"))
    if length:
        raw = await reader.readexactly(length)
        with contextlib.suppress(ValueError):
            body = orjson.loads(raw)
    return RawRequest(method, path, headers, body)


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(content: str, **extra: Any) -> bytes:
    chunk = {
        "id": "cmpl-raw",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        **extra,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _text_of(req: RawRequest) -> str:
    for msg in req.body.get("messages") or ():
        if isinstance(msg, dict) and isinstance(msg.get("content"), str):
            return str(msg["content"])
    return ""


async def _ok(req: RawRequest, w: asyncio.StreamWriter, stream: bool) -> None:
    text = _text_of(req)
    words = text.split()
    if len(words) >= 2 and words[0] == "sleep":
        await asyncio.sleep(int(words[1]) / 1000)
    usage = {"prompt_tokens": len(words), "completion_tokens": 1, "total_tokens": len(words) + 1}
    if stream:
        w.write(_SSE_HEAD_CHUNKED)
        w.write(_chunk(_event("ok")))
        w.write(_chunk(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n"))
        w.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return
    reply = {
        "id": "cmpl-raw",
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }
    w.write(_response(200, orjson.dumps(reply)))


def _credentials(req: RawRequest) -> list[str]:
    found = []
    auth = req.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        found.append(auth.removeprefix("Bearer "))
    for name, value in req.headers.items():
        if name.startswith(("x-", "api-")):
            found.append(value)
    return found


async def _echo_secrets(
    req: RawRequest, w: asyncio.StreamWriter, status: int, stream: bool
) -> None:
    # Built by hand: json.dumps would re-escape the escaped forms.
    words = _text_of(req).split()
    only = words[2] if len(words) > 2 and words[0] == "as" else None  # "as echo-secrets-200 url"
    forms = [
        (name, form)
        for s in _credentials(req)
        for name, form in encodings(s).items()
        if only is None or name == only
    ]
    listing = "; ".join(f"{name}={form}" for name, form in forms)
    if status >= 400:
        body = '{"error": {"message": "bad credentials: ' + listing + '", "type": "x"}}'
        w.write(_response(status, body.encode()))
        return
    if stream:
        w.write(_SSE_HEAD_CHUNKED)
        for name, form in forms:
            event = '{"choices": [{"index": 0, "delta": {"content": "' + f"{name}={form}" + '"}}]}'
            w.write(_chunk(b"data: " + event.encode() + b"\n\n"))
        w.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return
    body = (
        '{"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": '
        '{"role": "assistant", "content": "' + listing + '"}, "finish_reason": "stop"}]}'
    )
    w.write(_response(200, body.encode()))


def _error_body(status: int, shape: str) -> tuple[bytes, str]:
    """Error bodies in the shapes real servers use."""
    if shape == "openai":
        obj: Any = {
            "error": {
                "message": ERROR_MESSAGE,
                "type": "invalid_request_error",
                "param": "messages[0].content",
                "code": "unsupported_content",
            }
        }
    elif shape == "llamacpp":  # llama.cpp server: code is the HTTP status
        obj = {"error": {"code": status, "message": ERROR_MESSAGE, "type": "server_error"}}
    elif shape == "vllm":  # vLLM >= 0.10: an OpenAI envelope, code the HTTP status
        obj = {
            "error": {
                "message": ERROR_MESSAGE,
                "type": "BadRequestError",
                "param": "messages",
                "code": status,
            }
        }
    elif shape == "vllm-legacy":  # older vLLM: the fields at the top level
        obj = {
            "object": "error",
            "message": ERROR_MESSAGE,
            "type": "BadRequestError",
            "param": "messages",
            "code": status,
        }
    elif shape == "fastapi":
        obj = {"detail": [{"loc": ["body", "messages"], "msg": ERROR_MESSAGE}]}
    elif shape == "invalid":
        obj = {"error": {"message": ERROR_MESSAGE, "type": "invalid_request_error"}}
    elif shape == "long":
        obj = {"error": {"message": ERROR_MESSAGE + " " + "x" * 20_000}}
    else:
        return ERROR_MESSAGE.encode(), "text/plain"
    return json.dumps(obj).encode(), "application/json"
