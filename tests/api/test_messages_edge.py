"""Refusals on the Messages routes that happen before any route runs (the
connection guard, the failed-auth throttle, unknown paths and methods, a bad
anthropic-version) are in Anthropic's envelope, so its SDKs raise their own
typed errors; the same refusals elsewhere stay in OpenAI's."""

from __future__ import annotations

import anthropic
import httpx
import orjson
import pytest

from tests.api.test_http_limits import CAP, _config, _connect, _read_until_closed, _sockets
from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config

HELLO = {"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(_config(upstream.base_url))


def _answer(raw: bytes) -> tuple[int, dict[str, object], dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), orjson.loads(body), headers


def _anthropic_error(body: dict[str, object], kind: str) -> str:
    """The message of Anthropic's envelope, asserting its shape and type."""
    assert body["type"] == "error", body
    error = body["error"]
    assert isinstance(error, dict) and error["type"] == kind, body
    return str(error["message"])


def _messages_head(gw: Gateway, length: int, extra: str = "") -> bytes:
    return (
        f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {gw.tenant_key}\r\n"
        f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n{extra}\r\n"
    ).encode()


def _send(gw: Gateway, data: bytes) -> bytes:
    with _connect(gw) as sock:
        sock.sendall(data)
        return _read_until_closed(sock)


def test_an_oversized_head_on_messages_gets_anthropics_envelope(gw: Gateway) -> None:
    status, body, headers = _answer(
        _send(gw, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000)
    )
    assert status == 431 and headers["connection"] == "close"
    assert "8192" in _anthropic_error(body, "invalid_request_error")
    # Elsewhere, the same refusal in OpenAI's envelope.
    status, body, _ = _answer(_send(gw, b"GET /v1/models HTTP/1.1\r\nx-big: " + b"a" * 20_000))
    assert status == 431 and body["error"]["code"] == "headers_too_large"  # type: ignore[index]


def test_too_many_headers_on_count_tokens_get_anthropics_envelope(gw: Gateway) -> None:
    many = "".join(f"x-h{i}: v\r\n" for i in range(30))
    status, body, _ = _answer(
        _send(gw, f"POST /v1/messages/count_tokens HTTP/1.1\r\nhost: x\r\n{many}\r\n".encode())
    )
    assert status == 431
    assert "headers" in _anthropic_error(body, "invalid_request_error")


def test_a_body_that_never_ends_on_messages_gets_anthropics_envelope(gw: Gateway) -> None:
    with _connect(gw) as sock:
        sock.sendall(_messages_head(gw, 1_000) + b'{"model": "echo", ')
        status, body, _ = _answer(_read_until_closed(sock))
    assert status == 408
    assert "body_timeout_s" in _anthropic_error(body, "invalid_request_error")


def test_past_the_cap_messages_clients_get_a_529_they_retry(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = make_gateway(_config(upstream.base_url, body_timeout=20))
    with _sockets(gw, CAP, busy=True):  # every connection holds a request
        status, body, headers = _answer(_send(gw, _messages_head(gw, 2) + b"{}"))
        assert status == 529 and headers["retry-after"] == "1"
        assert "max_connections" in _anthropic_error(body, "overloaded_error")
        status, body, headers = _answer(_send(gw, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n"))
        assert status == 503 and body["error"]["code"] == "too_many_connections"  # type: ignore[index]
        # A newcomer that never says what it wants is closed, silently, at the head timeout.
        with _connect(gw) as silent:
            assert _read_until_closed(silent) == b""
    assert gw.services.metrics.registry.get_sample_value(
        "forebay_connections_refused_total", {"reason": "connection_limit"}
    ) == pytest.approx(3)


def test_unknown_paths_and_methods_under_messages_get_anthropics_envelope(gw: Gateway) -> None:
    auth = {"x-api-key": gw.tenant_key, "anthropic-version": "2023-06-01"}
    missing = httpx.post(f"{gw.url}/v1/messages/batches/x", json={}, headers=auth)
    assert missing.status_code == 404
    assert "/v1/messages/batches/x" in _anthropic_error(missing.json(), "not_found_error")
    wrong = httpx.get(f"{gw.url}/v1/messages", headers=auth)
    assert wrong.status_code == 405
    assert "GET" in _anthropic_error(wrong.json(), "invalid_request_error")
    elsewhere = httpx.get(f"{gw.url}/v1/nothing", headers=auth)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "unknown_url"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_bad_anthropic_version_is_refused_with_a_request_id(gw: Gateway, path: str) -> None:
    headers = {"x-api-key": gw.tenant_key, "anthropic-version": "latest"}
    resp = httpx.post(f"{gw.url}{path}", json=HELLO, headers=headers)
    assert resp.status_code == 400
    assert "anthropic-version" in _anthropic_error(resp.json(), "invalid_request_error")
    request_id = resp.headers["x-request-id"]
    assert request_id and resp.json()["request_id"] == request_id


def test_the_failed_auth_throttle_on_messages_is_an_anthropic_rate_limit(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    throttle = "\n    auth:\n      throttle: {max_failures: 3, window_s: 3.0}\n"
    gw = make_gateway(throttle + echo_config(upstream.base_url))
    bad = anthropic.Anthropic(api_key="sk-fb-wrong", base_url=gw.url, max_retries=0)
    for _ in range(3):
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.create(**HELLO)  # type: ignore[call-overload]
    good = anthropic.Anthropic(api_key=gw.tenant_key, base_url=gw.url, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        good.messages.create(**HELLO)  # type: ignore[call-overload]
    body = caught.value.body
    assert isinstance(body, dict)
    assert "too many requests" in _anthropic_error(body, "rate_limit_error").lower()
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 3
    with pytest.raises(anthropic.RateLimitError):
        good.messages.count_tokens(**{k: v for k, v in HELLO.items() if k != "max_tokens"})  # type: ignore[arg-type]
