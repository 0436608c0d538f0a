"""Upstream errors keep their cause: the reason reaches the client (bounded,
redacted), `param` and `code` survive from each server's error shape, errors
that are the request's fault are not retried, a 5xx is not retried on the same
deployment, and a 404 says the base_url is probably wrong."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from forebay.gateway.failures import MAX_REASON_CHARS
from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support.raw_upstream import ERROR_MESSAGE, RawUpstream

ALIASES = {
    "llama500": "error-500-llamacpp",
    "openai400": "error-400-openai",
    "vllm422": "error-422-vllm",
    "vllmold400": "error-400-vllm-legacy",
    "fastapi422": "error-422-fastapi",
    "invalid500": "error-500-invalid",
    "text500": "error-500-text",
    "busy503": "error-503-openai",
    "long500": "error-500-long",
    "gone409": "error-409-text",
}


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    with RawUpstream() as server:
        yield server


@pytest.fixture
def gw(make_gateway: GatewayFactory, raw: RawUpstream, upstream: Upstream) -> Gateway:
    aliases = "".join(
        f"\n      {alias}:\n        deployments:\n"
        f"          - {{name: dep-{alias}, base_url: '{raw.base_url}', model: {model}}}"
        for alias, model in ALIASES.items()
    )
    # The test upstream serves under /v1; this base_url forgets it (and carries credentials).
    bare = upstream.server.url.replace("http://", "http://user:hunter22@")
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    resilience: {{backoff_base_ms: 1, backoff_cap_ms: 5}}
    models:{aliases}
      nov1:
        deployments:
          - {{name: dep-nov1, base_url: '{bare}', model: echo}}
      failover:
        deployments:
          - {{name: first, base_url: '{raw.base_url}', model: error-500-llamacpp}}
          - {{name: second, base_url: '{raw.base_url}', model: ok}}
    """
    )


def _ask(gw: Gateway, model: str, *, stream: bool = False) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
        timeout=30,
    )


def _error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_500_reaches_the_client_with_its_reason_after_one_try(
    gw: Gateway, raw: RawUpstream, stream: bool
) -> None:
    err = _error(_ask(gw, "llama500", stream=stream), 502)
    assert ERROR_MESSAGE in str(err["message"]) and "dep-llama500" in str(err["message"])
    assert err["code"] == "upstream_failed"
    assert raw.tries("error-500-llamacpp") == 1  # the same answer would come again


def test_a_500_is_tried_on_another_deployment(gw: Gateway, raw: RawUpstream) -> None:
    resp = _ask(gw, "failover")
    assert resp.status_code == 200, resp.text
    assert "first failed: HTTP 500" in resp.headers["x-forebay-route"]


@pytest.mark.parametrize(
    ("alias", "status", "param", "code"),
    [
        ("openai400", 400, "messages[0].content", "unsupported_content"),
        ("vllm422", 422, "messages", "upstream_rejected_request"),  # its code is the status
        ("vllmold400", 400, "messages", "upstream_rejected_request"),
        ("fastapi422", 422, None, "upstream_rejected_request"),
        ("invalid500", 400, None, "upstream_rejected_request"),  # a 5xx that blames the request
        ("gone409", 400, None, "upstream_rejected_request"),
    ],
)
def test_the_requests_fault_is_passed_back_with_param_and_code_and_not_retried(
    gw: Gateway, raw: RawUpstream, alias: str, status: int, param: str | None, code: str
) -> None:
    err = _error(_ask(gw, alias), status)
    assert ERROR_MESSAGE in str(err["message"])
    assert (err["param"], err["code"]) == (param, code)
    assert err["type"] == "invalid_request_error"
    assert raw.tries(ALIASES[alias]) == 1


def test_a_transient_503_is_retried_and_keeps_its_reason(gw: Gateway, raw: RawUpstream) -> None:
    err = _error(_ask(gw, "busy503"), 503)
    assert ERROR_MESSAGE in str(err["message"]) and err["code"] == "upstream_unavailable"
    assert raw.tries("error-503-openai") == 3  # max_attempts, on the only deployment


def test_a_plain_text_reason_is_passed_on(gw: Gateway) -> None:
    err = _error(_ask(gw, "text500"), 502)
    assert f"HTTP 500: {ERROR_MESSAGE}" in str(err["message"])


def test_a_long_reason_is_bounded(gw: Gateway) -> None:
    err = _error(_ask(gw, "long500"), 502)
    message = str(err["message"])
    assert ERROR_MESSAGE in message and len(message) < MAX_REASON_CHARS + 200


def test_a_base_url_without_v1_says_so(gw: Gateway, upstream: Upstream) -> None:
    resp = _ask(gw, "nov1")
    err = _error(resp, 502)
    message = str(err["message"])
    assert err["code"] == "upstream_not_found"
    assert "HTTP 404" in message and "POST /chat/completions" in message
    assert "base_url" in message and "/v1" in message
    assert "hunter22" not in resp.text and "user:" not in resp.text
    assert len(upstream.fake.seen) == 0  # it never reached a route
