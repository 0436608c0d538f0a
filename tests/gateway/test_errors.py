"""Every way a request can go wrong gets the OpenAI error envelope, the right
status and a message a person can act on; secrets never leak into it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support.servers import free_port

SECRET = "sk-upstream-secret-DO-NOT-LEAK"


def _config(base_url: str, dead_url: str) -> str:
    def alias(name: str, model: str, **extra: object) -> str:
        fields = "".join(f"\n            {k}: {v}" for k, v in extra.items())
        return f"""
      {name}:
        deployments:
          - name: dep-{name}
            base_url: {base_url}
            model: {model}
            api_key: {SECRET}{fields}"""

    return (
        """
    key_refresh_s: 0.2
    server: {max_body_bytes: 2048}
    ledger: {flush_interval_s: 0.05}
    models:"""
        + alias("echo", "echo")
        + alias("slow", "slow-3000", timeout_s=0.3)
        + alias("badauth", "fail-401")
        + alias("rejects", "leak-400")
        + alias("busy", "fail-503")
        + alias("limited", "fail-429")
        + alias("dead", "echo").replace(base_url, dead_url)
        + """
      embed:
        kind: embedding
        deployments:
          - name: dep-embed
            base_url: """
        + base_url
        + """
            model: echo
    """
    )


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    return make_gateway(_config(upstream.base_url, dead))


@pytest.fixture
def http(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        yield client


def _chat(model: str = "echo", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and len(err["message"]) > 20
    assert SECRET not in resp.text
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "Authorization"),
        ({"authorization": "Bearer sk-fb-not-a-real-key"}, "revoked api key"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
    ],
)
def test_bad_or_missing_key_is_401(
    http: httpx.Client, headers: dict[str, str], fragment: str
) -> None:
    err = _error(http.post("/v1/chat/completions", json=_chat(), headers=headers), 401)
    assert err["type"] == "authentication_error"
    assert fragment.lower() in str(err["message"]).lower()
    assert "sk-fb-not-a-real-key" not in str(err["message"])


def test_azure_style_api_key_header_is_accepted(http: httpx.Client, gw: Gateway) -> None:
    resp = http.post("/v1/chat/completions", json=_chat(), headers={"api-key": gw.tenant_key})
    assert resp.status_code == 200


def test_model_outside_the_keys_scope_is_403(http: httpx.Client, gw: Gateway) -> None:
    created = http.post(
        "/admin/keys", json={"tenant": "default", "models": ["embed"]}, headers=_auth(gw.admin_key)
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    err = _error(http.post("/v1/chat/completions", json=_chat(), headers=_auth(key)), 403)
    assert err["type"] == "permission_error"
    listed = http.get("/v1/models", headers=_auth(key)).json()
    assert [m["id"] for m in listed["data"]] == ["embed"]


def test_unknown_model_is_404(http: httpx.Client, gw: Gateway) -> None:
    resp = http.post("/v1/chat/completions", json=_chat("gpt-9"), headers=_auth(gw.tenant_key))
    err = _error(resp, 404)
    assert err["param"] == "model" and "/v1/models" in str(err["message"])
    assert _error(http.get("/v1/models/gpt-9", headers=_auth(gw.tenant_key)), 404)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"", None),
        (orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), "model"),
        (orjson.dumps({"model": "echo"}), "messages"),
        (orjson.dumps({"model": "echo", "messages": [{"content": "x"}]}), "messages[0]"),
        (orjson.dumps(_chat(max_tokens=1.5)), "max_tokens"),
        (orjson.dumps(_chat(temperature=7)), "temperature"),
        (orjson.dumps(_chat(stream="yes")), "stream"),
        (orjson.dumps(_chat(stream=True, stream_options=["include_usage"])), "stream_options"),
        (orjson.dumps(_chat("embed")), "model"),
    ],
)
def test_malformed_or_invalid_body_is_400(
    http: httpx.Client, gw: Gateway, body: bytes, param: str | None
) -> None:
    headers = {**_auth(gw.tenant_key), "content-type": "application/json"}
    err = _error(http.post("/v1/chat/completions", content=body, headers=headers), 400)
    assert err["param"] == param


def test_chat_model_on_embeddings_endpoint_is_400(http: httpx.Client, gw: Gateway) -> None:
    resp = http.post(
        "/v1/embeddings", json={"model": "echo", "input": "x"}, headers=_auth(gw.tenant_key)
    )
    assert _error(resp, 400)["code"] == "wrong_model_kind"


def test_oversized_body_is_413_with_or_without_content_length(
    http: httpx.Client, gw: Gateway, upstream: Upstream
) -> None:
    big = orjson.dumps(_chat(padding="x" * 4096))
    err = _error(http.post("/v1/chat/completions", content=big, headers=_auth(gw.tenant_key)), 413)
    assert "2048" in str(err["message"])

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    resp = http.post("/v1/chat/completions", content=chunked(), headers=_auth(gw.tenant_key))
    assert "content-length" not in resp.request.headers
    _error(resp, 413)
    assert upstream.fake.seen == []


def test_dead_upstream_is_502(http: httpx.Client, gw: Gateway) -> None:
    err = _error(
        http.post("/v1/chat/completions", json=_chat("dead"), headers=_auth(gw.tenant_key)), 502
    )
    assert err["code"] == "upstream_unreachable" and "dep-dead" in str(err["message"])


def test_slow_upstream_is_504(http: httpx.Client, gw: Gateway) -> None:
    err = _error(
        http.post("/v1/chat/completions", json=_chat("slow"), headers=_auth(gw.tenant_key)), 504
    )
    assert err["code"] == "upstream_timeout"


def test_unavailable_upstream_is_503_and_rate_limited_is_429(
    http: httpx.Client, gw: Gateway
) -> None:
    busy = http.post("/v1/chat/completions", json=_chat("busy"), headers=_auth(gw.tenant_key))
    assert _error(busy, 503)["code"] == "upstream_unavailable"
    assert busy.headers["retry-after"] == "5"
    limited = http.post("/v1/chat/completions", json=_chat("limited"), headers=_auth(gw.tenant_key))
    assert _error(limited, 429)["code"] == "upstream_rate_limited"
    assert limited.headers["retry-after"] == "7"


def test_upstream_rejecting_our_credentials_is_502_without_the_secret(
    http: httpx.Client, gw: Gateway
) -> None:
    resp = http.post("/v1/chat/completions", json=_chat("badauth"), headers=_auth(gw.tenant_key))
    err = _error(resp, 502)
    assert err["code"] == "upstream_auth_failed" and "api_key" in str(err["message"])


def test_upstream_400_is_passed_back_with_the_secret_redacted(
    http: httpx.Client, gw: Gateway
) -> None:
    resp = http.post("/v1/chat/completions", json=_chat("rejects"), headers=_auth(gw.tenant_key))
    err = _error(resp, 400)
    assert "Incorrect API key provided" in str(err["message"])
    assert "[redacted]" in str(err["message"])


def test_wrong_method_and_unknown_path_use_the_envelope(http: httpx.Client, gw: Gateway) -> None:
    _error(http.get("/v1/chat/completions", headers=_auth(gw.tenant_key)), 405)
    _error(http.post("/v1/nothing-here", headers=_auth(gw.tenant_key)), 404)


def test_callers_cannot_choose_the_upstream(
    http: httpx.Client, gw: Gateway, upstream: Upstream
) -> None:
    """`api_base` and friends in the body, and Host-style headers, are ignored."""
    attacker = f"http://127.0.0.1:{free_port()}/v1"
    body = _chat(
        api_base=attacker, base_url=attacker, api_key="sk-attacker", extra_headers={"x": "1"}
    )
    headers = {
        **_auth(gw.tenant_key),
        "x-forwarded-host": "evil.example",
        "x-api-base": attacker,
        "openai-base-url": attacker,
    }
    resp = http.post("/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-forebay-route"] == "ordered: dep-echo"
    sent = upstream.fake.seen[-1]
    assert not {"api_base", "base_url", "api_key", "extra_headers"} & set(sent.body)
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert not any("evil" in v or attacker in v for v in sent.headers.values())
