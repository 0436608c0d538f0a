"""An HTTP(S) proxy on loopback that lets nothing through: a client run with
HTTPS_PROXY / HTTP_PROXY pointing here (and NO_PROXY naming loopback) sends
every request for the internet to it instead, where it is written down and
refused with 403. A test asserts `attempts` is empty: the client under test
reached nothing but the servers on loopback, and would have failed fast (not
hung on a dead network) had it tried."""

from __future__ import annotations

import socketserver
import threading
from typing import Any

REFUSAL = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        if line:
            self.server.attempts.append(line)  # type: ignore[attr-defined]
        self.wfile.write(REFUSAL)


class EgressTrap:
    def __init__(self) -> None:
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.attempts: list[str] = []
        self._server.attempts = self.attempts  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Proxy variables in both spellings clients read."""
        names = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
        out = {n: self.url for n in names} | {n.lower(): self.url for n in names}
        return out | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def __enter__(self) -> EgressTrap:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
