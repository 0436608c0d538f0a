"""A closed-loop HTTP/1.1 load generator that stays out of the way.

Raw `asyncio.Protocol` connections (uvloop when installed) with the httptools
response parser, one persistent keep-alive connection per simulated client,
and a pre-built request: per request it costs a few tens of microseconds of
CPU, far less than any gateway it measures (its own CPU per request is
reported so that claim is checked on every run).

`--protocol` says what the body is and how its stream ends: `chat` (OpenAI Chat
Completions, `Authorization: Bearer`, a stream ends with `[DONE]`), `responses`
(OpenAI Responses, bearer key, `response.completed`) or `messages` (Anthropic
Messages, the key in `x-api-key` with `anthropic-version`, `message_stop`).
Each of `--concurrency` connections sends its next request as soon as the last
answer (the whole body, for a stream: up to its last event) has arrived; a stream
without its protocol's last event counts as an error. After
`--warmup` seconds a window of `--duration` seconds is measured: completions
inside the window give req/s and latencies, and `/proc/<pid>/stat` of the
processes named by `--pids` is read at both edges of the window, so CPU per
request is a ratio of two rates taken over the same interval.

Prints one JSON object on stdout. Run: `python bench/loadgen.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools

CLK_TCK = os.sysconf("SC_CLK_TCK")
# What a whole stream of each protocol must contain (its last event).
STREAM_END = {
    "chat": b"data: [DONE]",
    "responses": b"event: response.completed",
    "messages": b"event: message_stop",
}
ANTHROPIC_VERSION = b"2023-06-01"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def build_request(url: str, body: bytes, token: str | None, protocol: str = "chat") -> bytes:
    parts = urlsplit(url)
    host = parts.netloc.encode()
    head = [
        b"POST " + (parts.path or "/").encode() + b" HTTP/1.1",
        b"host: " + host,
        b"content-type: application/json",
        b"accept: */*",
        b"content-length: " + str(len(body)).encode(),
    ]
    if protocol == "messages":
        head.append(b"anthropic-version: " + ANTHROPIC_VERSION)
        if token:
            head.append(b"x-api-key: " + token.encode())
    elif token:
        head.append(b"authorization: Bearer " + token.encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class ClientConn(asyncio.Protocol):
    """One keep-alive connection; `request()` sends and awaits a whole response."""

    def __init__(self, end_marker: bytes = STREAM_END["chat"]) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._marker = end_marker
        self._keep = len(end_marker) - 1
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.first_byte = 0.0
        self.tail = b""
        self.body_bytes = 0
        self.ended = False  # the stream's last event has been seen
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if not self.ended:
            # The marker may straddle two reads: look at the last bytes of the previous too.
            seen = self.tail + body
            self.ended = self._marker in seen
            self.tail = seen[-self._keep :]

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def status(self) -> int:
        return int(self._parser.get_status_code())

    async def request(self, raw: bytes) -> None:
        if self._transport is None:
            raise ConnectionResetError("not connected")
        self.first_byte = 0.0
        self.tail = b""
        self.body_bytes = 0
        self.ended = False
        self._waiter = self._loop.create_future()
        self._transport.write(raw)
        await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class Window:
    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, round(q * (len(sorted_ms) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = args.body.encode()
    raw = build_request(args.url, body, args.token, args.protocol)
    marker = STREAM_END[args.protocol]
    stream = args.stream
    pids = [int(p) for p in args.pids.split(",") if p] if args.pids else []
    window = Window()
    t0 = time.perf_counter()
    window.start = t0 + args.warmup
    window.end = window.start + args.duration

    async def connect() -> ClientConn:
        _, proto = await loop.create_connection(lambda: ClientConn(marker), host, port)
        return proto

    async def client() -> None:
        conn = await connect()
        perf = time.perf_counter
        while True:
            sent = perf()
            if sent >= window.end:
                break
            try:
                await conn.request(raw)
            except (OSError, httptools.HttpParserError) as exc:
                done = perf()
                if window.start <= done <= window.end:
                    window.error(type(exc).__name__)
                conn.close()
                await asyncio.sleep(0.01)
                conn = await connect()
                continue
            done = perf()
            if done < window.start or done > window.end:
                continue
            if conn.status != 200:
                window.error(f"http_{conn.status}")
            elif stream and not conn.ended:
                window.error("stream_without_end")
            else:
                window.latencies.append((done - sent) * 1000)
                window.ttfb.append((conn.first_byte - sent) * 1000)
        conn.close()

    async def sample_edges() -> tuple[list[float], list[float], float, float]:
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        before = [cpu_seconds(p) for p in pids]
        own_before = time.process_time()
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        after = [cpu_seconds(p) for p in pids]
        own_after = time.process_time()
        return before, after, own_before, own_after

    sampler = asyncio.create_task(sample_edges())
    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    before, after, own_before, own_after = await sampler
    lat = sorted(window.latencies)
    ttfb = sorted(window.ttfb)
    n = len(lat)
    return {
        "requests": n,
        "errors": window.errors,
        "error_kinds": window.error_kinds,
        "seconds": args.duration,
        "rps": n / args.duration,
        "p50_ms": pct(lat, 0.50),
        "p90_ms": pct(lat, 0.90),
        "p99_ms": pct(lat, 0.99),
        "max_ms": lat[-1] if lat else float("nan"),
        "mean_ms": sum(lat) / n if n else float("nan"),
        "ttfb_p50_ms": pct(ttfb, 0.50),
        "ttfb_p99_ms": pct(ttfb, 0.99),
        "cpu_s": {str(p): a - b for p, b, a in zip(pids, before, after, strict=True)},
        "loadgen_cpu_s": own_after - own_before,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="Closed-loop HTTP/1.1 load generator.")
    ap.add_argument("--url", required=True)
    ap.add_argument(
        "--token", default=None, help="sent as Authorization: Bearer (messages: x-api-key)"
    )
    ap.add_argument("--protocol", choices=sorted(STREAM_END), default="chat")
    ap.add_argument("--body", required=True, help="the JSON request body")
    ap.add_argument(
        "--stream", action="store_true", help="answers must end with the protocol's last event"
    )
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--pids", default="", help="comma-separated pids whose CPU is sampled")
    args = ap.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
