"""What the guarded connection protocol (forebay.api.connections) adds per
request over uvicorn's plain httptools protocol.

Both protocols get the same keep-alive connection (an in-memory transport, so
no socket or kernel time is counted) and the same requests: a chat-completion
POST with a bearer key, 8 headers and a 200-byte body, answered at once by a
minimal ASGI app. Each round measures the CPU time (process_time) of N
requests through each protocol, alternating which goes first and each after a
garbage collection, on uvloop. The report gives µs per request in the fastest
round (the least disturbed by other processes) and in the median round.

    .venv/bin/python -m bench.edge_cost            # about 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from forebay.api.connections import GuardedProtocolFactory
from forebay.api.server import edge_limits
from forebay.config.schema import ServerConfig

BODY = b'{"model":"echo","messages":[{"role":"user","content":"' + b"x" * 150 + b'"}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"
    b"authorization: Bearer sk-fb-0123456789abcdef0123456789abcdef0123\r\n"
    b"content-type: application/json\r\naccept: application/json\r\n"
    b"user-agent: OpenAI/Python 1.99.0\r\nx-stainless-lang: python\r\n"
    b"accept-encoding: gzip, deflate\r\ncontent-length: " + str(len(BODY)).encode() + b"\r\n\r\n"
) + BODY


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.responses = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += 1
        if bytes(data).endswith(b"}"):  # the end of the answer below
            self.responses.set()

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def _time(make: Any, config: Config, n: int) -> float:
    transport = _Transport()
    proto = make(config=config, server_state=ServerState(), app_state={})
    proto.connection_made(transport)
    start = time.process_time()
    for _ in range(n):
        transport.responses.clear()
        proto.data_received(REQUEST)
        await transport.responses.wait()
    elapsed = time.process_time() - start
    proto.connection_lost(None)
    return elapsed / n * 1e6


async def main(rounds: int, n: int) -> None:
    config = Config(_app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    guarded = GuardedProtocolFactory(edge_limits(ServerConfig()))
    plain_us: list[float] = []
    guarded_us: list[float] = []
    await _time(HttpToolsProtocol, config, n)  # warm-up
    await _time(guarded, config, n)
    for i in range(rounds):
        # Alternate which goes first, and start each from a collected heap, so
        # neither pays for the other's garbage.
        for make, into in [(HttpToolsProtocol, plain_us), (guarded, guarded_us)][
            :: 1 - 2 * (i % 2)
        ]:
            gc.collect()
            into.append(await _time(make, config, n))
    print(f"requests per round: {n}, rounds: {rounds}")
    for name, pick in (("fastest round", min), ("median round", statistics.median)):
        plain, guard = pick(plain_us), pick(guarded_us)
        print(
            f"{name}: uvicorn HttpToolsProtocol {plain:.2f} µs/request, "
            f"GuardedHttpToolsProtocol {guard:.2f} µs/request, "
            f"added {guard - plain:+.2f} µs ({(guard - plain) / plain:+.1%})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    uvloop.run(main(args.rounds, args.requests))
