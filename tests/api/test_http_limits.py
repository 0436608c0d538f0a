"""The HTTP edge under hostile clients, with raw sockets on loopback: header
floods, slowloris heads, endless bodies, idle sockets and more connections
than the cap. Small limits keep each test short; waits are bounded polls."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config

CAP = 20
LIMITS = f"""
    server:
      max_header_bytes: 8192
      max_headers: 20
      header_timeout_s: 1
      body_timeout_s: {{body_timeout}}
      keep_alive_timeout_s: 5
      max_connections: {CAP}
    # The cap test sends more bad keys than the failed-auth throttle allows from one
    # address; the throttle has its own tests (tests/gateway/test_auth_failures.py).
    auth: {{{{throttle: {{{{enabled: false}}}}}}}}
"""


def _config(base_url: str, body_timeout: float = 1) -> str:
    slow = f"""
      slow:
        deployments:
          - {{name: fake-slow, base_url: {base_url}, model: slow-1500}}
      drip:
        deployments:
          - {{name: fake-drip, base_url: {base_url}, model: drip-30}}
    """
    return echo_config(base_url) + slow + LIMITS.format(body_timeout=body_timeout)


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(_config(upstream.base_url))


def _connect(gw: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.server.port), timeout=10)


def _read_until_closed(sock: socket.socket, within: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection; fails if it
    is still open after `within` seconds."""
    sock.settimeout(0.1)
    data = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server kept the connection open for {within} s: {data[:200]!r}")


def _status_and_error(raw: bytes) -> tuple[int, dict[str, object], dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), orjson.loads(body)["error"], headers


def _chat_head(gw: Gateway, length: int, extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
        f"authorization: Bearer {gw.tenant_key}\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n{extra}\r\n"
    ).encode()


def _refused(gw: Gateway) -> dict[str, float]:
    text = httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {gw.admin_key}"}).text
    return {
        s.labels["reason"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "forebay_connections_refused_total"
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_one_huge_header_line_gets_431_and_the_connection_closes(gw: Gateway) -> None:
    with _connect(gw) as sock:
        # No end of line: the parser would buffer this value whole before reporting it.
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000)
        status, error, headers = _status_and_error(_read_until_closed(sock))
    assert status == 431 and error["code"] == "headers_too_large"
    assert "8192" in str(error["message"]) and headers["connection"] == "close"


def test_too_many_headers_get_431(gw: Gateway) -> None:
    many = "".join(f"x-h{i}: v\r\n" for i in range(30))
    with _connect(gw) as sock:
        sock.sendall(f"GET /v1/models HTTP/1.1\r\nhost: x\r\n{many}\r\n".encode())
        status, error, _ = _status_and_error(_read_until_closed(sock))
    assert status == 431 and error["code"] == "headers_too_large"


def test_a_header_flood_is_cut_off_with_memory_bounded(gw: Gateway) -> None:
    """128 MiB of one header line: without a bound the server buffers all of it
    (the gateway runs in this process, so its RSS is ours)."""
    before = _rss_bytes()
    piece = b"a" * (1 << 20)
    sent = 0
    with _connect(gw) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nx-flood: ")
            while sent < 128 << 20:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: what this test wants
    assert sent < 64 << 20, f"the server accepted {sent >> 20} MiB of header"
    assert _rss_bytes() - before < 48 << 20
    assert _refused(gw)["headers_too_large"] == 1


def test_a_slowloris_head_is_closed_after_the_header_timeout(gw: Gateway) -> None:
    answer = b""
    with _connect(gw) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nx-slow")
        sock.settimeout(0.1)
        for _ in range(100):  # one more byte of a header name every 0.1 s, 10 s at most
            try:
                sock.sendall(b"w")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            answer += chunk
            if not chunk:
                break
    status, error, _ = _status_and_error(answer)
    assert status == 408 and error["code"] == "request_timeout"
    assert _refused(gw)["header_timeout"] == 1


def test_a_body_that_never_ends_is_cut_after_the_body_timeout(gw: Gateway) -> None:
    answer = b""
    with _connect(gw) as sock:
        sock.sendall(_chat_head(gw, 1_000_000) + b'{"model": "echo", ')
        sock.settimeout(0.1)
        for _ in range(100):  # a byte every 0.1 s, for at most 10 s
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            answer += chunk
            if not chunk:
                break
    status, error, _ = _status_and_error(answer)
    assert status == 408 and error["code"] == "request_timeout"
    assert _refused(gw)["body_timeout"] == 1
    rows = [r for r in gw.wait_rows(1) if r["status"] == 499]
    assert rows and rows[0]["error_type"] == "client_disconnected"


def test_sockets_opened_and_never_used_are_closed(gw: Gateway) -> None:
    socks = [_connect(gw) for _ in range(5)]
    try:
        for sock in socks:
            assert _read_until_closed(sock) == b""  # silently: they asked for nothing
    finally:
        for sock in socks:
            sock.close()
    assert _refused(gw)["header_timeout"] == 5


def test_slow_answers_and_long_streams_outlive_the_read_timeouts(gw: Gateway) -> None:
    """The deadlines cover reading a request, not the time spent answering it,
    and a kept-alive connection carries requests for longer than any deadline."""
    auth = {"authorization": f"Bearer {gw.tenant_key}"}
    msg = [{"role": "user", "content": "hi"}]
    with httpx.Client(base_url=gw.base_url, headers=auth, timeout=20) as client:
        slow = client.post("/chat/completions", json={"model": "slow", "messages": msg})
        assert slow.status_code == 200
        body = {"model": "drip", "messages": msg, "stream": True}
        with client.stream("POST", "/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            assert b"[DONE]" in b"".join(stream.iter_bytes())
        start = time.monotonic()
        while time.monotonic() - start < 1.5:  # past header_timeout_s on one connection
            resp = client.post("/chat/completions", json={"model": "echo", "messages": msg})
            assert resp.status_code == 200
            time.sleep(0.2)
    assert _refused(gw) == {r: 0 for r in _refused(gw)}


@contextmanager
def _sockets(gw: Gateway, n: int, *, busy: bool = False) -> Iterator[list[socket.socket]]:
    """`n` connections: idle (nothing sent), or busy, holding a request whose
    body is still on its way (the server's 100 Continue says the app is reading it)."""
    socks = []
    try:
        for _ in range(n):
            sock = _connect(gw)
            socks.append(sock)
            if busy:
                sock.sendall(_chat_head(gw, 100, "expect: 100-continue\r\n"))
                assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
                sock.sendall(b"{")
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_past_the_cap_idle_sockets_make_room_and_busy_ones_get_503(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = make_gateway(_config(upstream.base_url, body_timeout=20))
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {gw.tenant_key}"}
    # Without a key a body still due holds nothing: answered 401, such a
    # connection is idle and makes room like any other.
    with _sockets(gw, CAP) as anonymous:
        for sock in anonymous:
            sock.sendall(_chat_head(gw, 100).replace(gw.tenant_key.encode(), b"sk-fb-nope"))
            assert sock.recv(100).startswith(b"HTTP/1.1 401")
        assert httpx.post(f"{gw.base_url}/chat/completions", json=chat, headers=auth).is_success
        _read_until_closed(anonymous[0], 5)  # the longest-idle one was closed for it
    with _sockets(gw, CAP - 5, busy=True), _sockets(gw, 3 * CAP) as idle:
        # Idle sockets cannot crowd out real clients: the longest-idle ones
        # were closed to make room for each newcomer, and this one is served.
        assert httpx.post(f"{gw.base_url}/chat/completions", json=chat, headers=auth).is_success
        assert all(_read_until_closed(s, 5) == b"" for s in idle[: 2 * CAP])
        with _sockets(gw, 5, busy=True):  # now every connection holds a request
            with _connect(gw) as extra:
                extra.sendall(_chat_head(gw, 2) + b"{}")  # answered once its path is known
                status, error, headers = _status_and_error(_read_until_closed(extra))
            assert status == 503 and error["code"] == "too_many_connections"
            assert headers["retry-after"] == "1"
    # Once those requests are gone, real clients are served again.
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.post(f"{gw.base_url}/chat/completions", json=chat, headers=auth).is_success:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway did not recover its connections"
        time.sleep(0.05)
    refused = _refused(gw)
    assert refused["idle_evicted"] >= 2 * CAP and refused["connection_limit"] >= 1
