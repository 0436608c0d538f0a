"""The HTTP connection edge: what a client without a key can make the server
hold, bounded before any request reaches the app.

uvicorn's httptools protocol has no limit on header size or count, no
deadline for a request head or body, and no connection cap that answers
before a head is read. `GuardedHttpToolsProtocol` adds them:

* headers are counted as the parser reports them; the bytes received while a
  head is incomplete are counted per read, so a head still incomplete past
  `max_header_bytes` (say one endless header line, which the parser buffers
  whole before reporting it) is cut within one socket read of the limit, and a
  head that arrived with a large read is measured exactly; either way the
  answer is 431 and the connection closes;
* a request head must be complete within `header_timeout_s` of the connection
  opening (or, on a kept-alive connection, of the request's first byte), and
  its body within `body_timeout_s` of the head; a late client gets 408 and the
  connection closes (a connection that never sent a byte is just closed);
* at `max_connections` a new connection takes the place of the longest-idle
  one (waiting for a head, never used, or kept alive), so idle sockets cannot
  lock out real clients; when none is idle the newcomer gets 503 + Retry-After
  as soon as its request line arrives (at most `MAX_WAITING` such newcomers
  wait for theirs; past that they are answered at once).

Every refusal is in the envelope of the path asked for: Anthropic's on
/v1/messages* (so its SDKs raise their typed errors; 503 is its 529), OpenAI's
elsewhere and when no path has arrived.

Per request this costs a count per header, three `loop.time()` reads and a
few comparisons: one watchdog timer per connection is re-armed only when a
deadline it has not covered comes due, instead of a timer per request (a timer
costs ~2.4 µs to arm and cancel on uvloop, `loop.time()` ~0.13 µs).
bench/edge_cost.py measures the difference against uvicorn's protocol.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from forebay.api.errors import anthropic_error, openai_error_body
from forebay.errors import ForebayError

# Key of the lifespan state entry through which the app receives this
# process's guard (to export its counts as metrics); see `EdgeGuard.bind`.
GUARD_HOOK = "forebay.connection_guard"

REFUSAL_REASONS = (
    "connection_limit",  # at the cap with no idle connection: 503
    "idle_evicted",  # closed to make room for a new connection
    "headers_too_large",  # 431
    "header_timeout",  # 408, or a silent close when nothing was sent
    "body_timeout",  # 408
)

ANTHROPIC_PREFIX = b"/v1/messages"
# Newcomers past the cap, with nothing idle to close, that may wait (each with a
# socket) for their request line to learn which envelope to answer in.
MAX_WAITING = 64


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_connections: int
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float


def _http_response(status: int, body: bytes, headers: Mapping[str, str]) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Overloaded"
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal, built once in both envelopes."""

    openai: bytes
    anthropic: bytes

    @classmethod
    def of(cls, status: int, message: str, code: str, **headers: str) -> Refusal:
        err = ForebayError(status, message, code=code)
        head = {k.replace("_", "-"): v for k, v in headers.items()}
        anthropic_status, anthropic_body = anthropic_error(err)
        return cls(
            _http_response(status, openai_error_body(err), head),
            _http_response(anthropic_status, anthropic_body, head),
        )

    def to(self, path: bytes) -> bytes:
        return self.anthropic if path.startswith(ANTHROPIC_PREFIX) else self.openai


def _request_path(data: bytes) -> bytes:
    """The path of a request line at the start of `data` (b"" if none)."""
    parts = data.split(b" ", 2)
    return parts[1] if len(parts) > 1 else b""


class EdgeGuard:
    """The client connections of one server process: how many are open, which
    are idle (longest-idle first) and how many the edge refused, by reason.
    The answers it sends are built once, here."""

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self.open = 0
        self.idle: OrderedDict[GuardedHttpToolsProtocol, None] = OrderedDict()
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self.waiting = 0  # newcomers past the cap waiting for their request line
        self._bound = False
        self.busy = Refusal.of(
            503,
            f"Forebay is serving its maximum of {limits.max_connections} connections "
            "(server.max_connections); retry shortly.",
            "too_many_connections",
            retry_after="1",
        )
        self.too_large = Refusal.of(
            431,
            f"The request head is larger than {limits.max_header_bytes} bytes or has more "
            f"than {limits.max_headers} headers (server.max_header_bytes, server.max_headers).",
            "headers_too_large",
        )
        self.head_late = Refusal.of(
            408,
            f"The request head did not arrive within {limits.header_timeout_s:g} s "
            "(server.header_timeout_s).",
            "request_timeout",
        )
        self.body_late = Refusal.of(
            408,
            f"The request body did not arrive within {limits.body_timeout_s:g} s "
            "(server.body_timeout_s).",
            "request_timeout",
        )

    def bind(self, app_state: Mapping[str, Any]) -> None:
        """Hand this guard to the app once (it exports the counts as metrics),
        through the lifespan state that uvicorn gives every protocol."""
        if not self._bound:
            self._bound = True
            hook = app_state.get(GUARD_HOOK)
            if hook is not None:
                hook(self)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing an oversized head."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds described in the module
    docstring. `on_header` and `data_received` repeat uvicorn's few lines
    rather than call them, to keep the cost per header to one count."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: EdgeGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        guard.bind(app_state)
        self._guard = guard
        limits = guard.limits
        self._max_connections = limits.max_connections
        self._max_head = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._head_s = limits.header_timeout_s
        self._body_s = limits.body_timeout_s
        self._between_s = self.timeout_keep_alive + limits.header_timeout_s
        self._counted = False  # included in guard.open
        self._over_cap = False  # refused at the cap, waiting for its request line
        self.url = b""  # uvicorn sets it per request; a refusal may come first
        self._deadline = math.inf  # loop time by which the awaited bytes must be in
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = math.inf  # when it fires; inf while there is none
        self._first_head = True  # the first head's clock starts at connection open
        self._in_head = True  # between requests or inside a head: bytes count as head
        self._raw_head = 0  # bytes received while in a head
        self._head_count = 0

    # -- connection --------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self._guard
        guard.open += 1
        self._counted = True
        if guard.open > self._max_connections:
            if guard.idle:
                victim, _ = guard.idle.popitem(last=False)
                guard.refused["idle_evicted"] += 1
                victim._close()
            else:
                guard.refused["connection_limit"] += 1
                if guard.waiting >= MAX_WAITING:
                    self._refuse(guard.busy.openai)
                    return
                guard.waiting += 1
                self._over_cap = True  # answered by data_received, or closed when late
                self._set_deadline(self.loop.time() + self._head_s)
                return
        guard.idle[self] = None
        self._set_deadline(self.loop.time() + self._head_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def _forget(self) -> None:
        """Out of the guard's counts and timers; safe to call more than once."""
        if self._counted:
            self._counted = False
            self._guard.open -= 1
            self._guard.idle.pop(self, None)
        if self._over_cap:
            self._over_cap = False
            self._guard.waiting -= 1
        self._deadline = math.inf
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
            self._watchdog_at = math.inf

    def _close(self) -> None:
        self._forget()
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._forget()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- deadlines ---------------------------------------------------------
    # Callers on the per-request path set `_deadline` and call `_set_deadline`
    # only when the new deadline is earlier than the watchdog's next firing.
    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if deadline < self._watchdog_at:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog_at = deadline
            self._watchdog = self.loop.call_at(deadline, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        self._watchdog_at = math.inf
        deadline = self._deadline
        if deadline == math.inf:
            return  # nothing awaited; the next deadline re-arms
        if self.loop.time() < deadline:
            self._set_deadline(deadline)  # moved later since this was armed
            return
        if self._over_cap:
            self._close()  # refused at the cap and never said what it wanted
        elif self._in_head:
            self._guard.refused["header_timeout"] += 1
            if self._raw_head == 0:
                self._close()  # opened (or kept alive) and never used
            else:
                self._refuse(self._guard.head_late.to(self.url))
        else:
            self._guard.refused["body_timeout"] += 1
            cycle = self.cycle
            if cycle is not None and cycle.response_started:
                self._close()
            else:
                self._refuse(self._guard.body_late.to(self.url))

    # -- bytes and parser callbacks -----------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._over_cap:
            self._refuse(self._guard.busy.to(_request_path(data)))
            return
        if self._in_head:
            self._raw_head += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._guard.refused["headers_too_large"] += 1
                self._refuse(self._guard.too_large.to(self.url))
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head and self._raw_head > self._max_head:
            # A head still incomplete after this many bytes: cut within one read.
            self._guard.refused["headers_too_large"] += 1
            self._refuse(self._guard.too_large.to(self.url))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_count = 0
        if self._first_head:
            self._first_head = False
        else:
            deadline = self.loop.time() + self._head_s
            self._deadline = deadline
            if deadline < self._watchdog_at:
                self._set_deadline(deadline)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        if self._head_count > self._max_headers:
            raise _HeadTooLarge
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._raw_head > self._max_head and self._head_size() > self._max_head:
            raise _HeadTooLarge  # only a head that came with a large read is measured
        self._in_head = False
        self._raw_head = 0
        self._guard.idle.pop(self, None)
        deadline = self.loop.time() + self._body_s
        self._deadline = deadline
        if deadline < self._watchdog_at:
            self._set_deadline(deadline)
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)

    def on_message_complete(self) -> None:
        self._in_head = True
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.pipeline:
            # Answered before its body ended (a 401, a 413): now it waits for the
            # next request, and the keep-alive timer was cancelled by the body.
            self._await_next_request()
        else:
            self._deadline = math.inf  # the watchdog, when it fires, finds nothing due
        super().on_message_complete()

    def on_response_complete(self) -> None:
        answered = not self.pipeline  # nothing else of this connection's is in flight
        super().on_response_complete()
        if answered and self._counted and not self.transport.is_closing():
            # Idle for eviction even if the rest of a body is still due: the
            # server has nothing left to do for this connection.
            self._guard.idle[self] = None
            if self._deadline == math.inf:
                self._await_next_request()

    def _await_next_request(self) -> None:
        # uvicorn's keep-alive timer closes a connection on which nothing arrives,
        # and the next head has header_timeout_s from its first byte. This outer
        # bound also catches bytes that start no request (blank lines), which
        # cancel the keep-alive timer.
        deadline = self.loop.time() + self._between_s
        self._deadline = deadline
        if deadline < self._watchdog_at:
            self._set_deadline(deadline)


class GuardedProtocolFactory:
    """What uvicorn's `Config(http=...)` calls to make each connection's
    protocol. It holds the limits only; each process that unpickles it (with
    `--workers N`) makes its own guard on first use."""

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self._guard: EdgeGuard | None = None

    @property
    def guard(self) -> EdgeGuard:
        if self._guard is None:
            self._guard = EdgeGuard(self.limits)
        return self._guard

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> GuardedHttpToolsProtocol:
        return GuardedHttpToolsProtocol(config, server_state, app_state, _loop, guard=self.guard)

    def __getstate__(self) -> dict[str, Any]:
        return {"limits": self.limits, "_guard": None}


GuardHook = Callable[[EdgeGuard], None]
