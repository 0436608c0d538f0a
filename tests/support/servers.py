"""Run real ASGI servers on loopback for tests: uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from forebay.api.server import Listeners, bind_listeners, uvicorn_config
from forebay.config.schema import ServerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A uvicorn server on 127.0.0.1 in its own thread and event loop.

    With `server` (a gateway's `server:` settings) it is configured exactly as
    `forebay serve` configures it (forebay.api.server), with the guarded
    connection protocol, on `listeners` (or a socket bound here); without, it
    is plain uvicorn (fake upstreams)."""

    def __init__(
        self,
        app: Any,
        port: int | None = None,
        *,
        server: ServerConfig | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        self._sockets: list[socket.socket] | None = None
        if server is not None:
            listeners = listeners or bind_listeners("127.0.0.1", port or 0, server)
            self._sockets = listeners.sockets
            self.port = listeners.port
            config = uvicorn_config(
                app, server, loop="asyncio", log_level="warning", timeout_graceful_shutdown=5
            )
        else:
            self.port = port or free_port()
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                loop="asyncio",
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=5,
            )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve(sockets=self._sockets))
        self.loop.close()

    def start(self, timeout: float = 60.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
