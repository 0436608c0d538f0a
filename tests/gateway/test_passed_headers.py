"""The caller's headers that mean something to an upstream reach it; its
credentials, hop-by-hop headers and anything else never do (the rule:
forebay.upstreams.passed_headers). Checked on what the loopback upstream
really received."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from forebay.gateway.request_headers import scan
from forebay.upstreams.base import WireProtocol
from forebay.upstreams.passed_headers import MAX_VALUE, PASSED, for_upstream
from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config

MEANINGFUL = {
    "Idempotency-Key": "retry-7f3a",
    "OpenAI-Beta": "assistants=v2",
    "anthropic-beta": "prompt-caching-2024-07-31",
    "anthropic-version": "2023-06-01",
}
NEVER = {
    "x-api-key": "sk-ant-caller-secret",
    "api-key": "azure-caller-secret",
    "x-goog-api-key": "gemini-caller-secret",
    "Cookie": "session=caller-secret",
    "Proxy-Authorization": "Basic Y2FsbGVyOnNlY3JldA==",
    "OpenAI-Organization": "org-caller",
    "OpenAI-Project": "proj-caller",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Trailer": "x-checksum",
    "Proxy-Connection": "keep-alive",
    "X-Stainless-Lang": "python",
    "User-Agent": "caller-agent/1.0",
    "X-Forwarded-For": "10.0.0.1",
    "X-Anything": "else",
}


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(
        echo_config(upstream.base_url)
        + f"""
      configured:
        deployments:
          - name: fake-configured
            base_url: {upstream.base_url}
            model: echo
            headers: {{OpenAI-Beta: from-the-deployment}}
    """
    )


def _post(gw: Gateway, model: str = "echo", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "a b"}], **extra}
    headers = {"authorization": f"Bearer {gw.tenant_key}", **MEANINGFUL, **NEVER}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=10)


def _received(upstream: Upstream) -> dict[str, str]:
    return upstream.fake.seen[-1].headers  # names lower-case, as received


def _assert_only_meaningful_openai_headers(got: dict[str, str]) -> None:
    assert got["idempotency-key"] == MEANINGFUL["Idempotency-Key"]
    assert got["openai-beta"] == MEANINGFUL["OpenAI-Beta"]
    assert "anthropic-beta" not in got and "anthropic-version" not in got  # not its protocol
    for name, value in NEVER.items():
        assert got.get(name.lower()) != value, name
    secrets = [v for v in NEVER.values() if "secret" in v or v.startswith("Basic")]
    assert not any(secret in v for v in got.values() for secret in secrets)
    # Authenticated as the deployment, never as the caller.
    assert got["authorization"] == "Bearer sk-upstream-secret-DO-NOT-LEAK"


def test_meaningful_headers_reach_an_openai_upstream_and_credentials_never_do(
    gw: Gateway, upstream: Upstream
) -> None:
    assert _post(gw).status_code == 200
    _assert_only_meaningful_openai_headers(_received(upstream))


def test_the_same_for_a_stream(gw: Gateway, upstream: Upstream) -> None:
    resp = _post(gw, stream=True)
    assert resp.status_code == 200 and resp.text.endswith("data: [DONE]\n\n")
    _assert_only_meaningful_openai_headers(_received(upstream))


def test_a_caller_authenticated_by_api_key_does_not_pass_it_on(
    gw: Gateway, upstream: Upstream
) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "a"}]}
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        json=body,
        headers={"api-key": gw.tenant_key, "Idempotency-Key": "k1"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    got = _received(upstream)
    assert gw.tenant_key not in " ".join(got.values())
    assert got["idempotency-key"] == "k1"


def test_the_openai_client_s_extra_headers_are_passed(
    gw: Gateway, upstream: Upstream, sdk: Callable[..., openai.OpenAI]
) -> None:
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)
    client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "a"}],
        extra_headers={"OpenAI-Beta": "responses=v1", "Idempotency-Key": "sdk-1"},
    )
    got = _received(upstream)
    assert (got["openai-beta"], got["idempotency-key"]) == ("responses=v1", "sdk-1")
    assert gw.tenant_key not in " ".join(got.values())
    assert not any(name.startswith("x-stainless") for name in got)


def test_a_header_the_deployment_sets_is_never_replaced_by_the_caller_s(
    gw: Gateway, upstream: Upstream
) -> None:
    assert _post(gw, "configured").status_code == 200
    got = _received(upstream)
    assert got["openai-beta"] == "from-the-deployment"
    assert got["idempotency-key"] == MEANINGFUL["Idempotency-Key"]


def test_without_such_headers_nothing_is_added(gw: Gateway, upstream: Upstream) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "a"}]}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=10)
    assert not set(PASSED) & set(_received(upstream))


def test_which_protocol_gets_which() -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in {**MEANINGFUL, **NEVER}.items()]
    passed = scan(raw).passed
    assert passed == {k.lower(): v for k, v in MEANINGFUL.items()}
    anthropic = for_upstream(passed, {WireProtocol.ANTHROPIC_MESSAGES})
    assert anthropic == {
        "idempotency-key": "retry-7f3a",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "anthropic-version": "2023-06-01",
    }
    responses = for_upstream(passed, {WireProtocol.OPENAI_RESPONSES})
    assert responses == {"idempotency-key": "retry-7f3a", "openai-beta": "assistants=v2"}
    # Gemini and Bedrock have no use for any of them.
    assert for_upstream(passed, {WireProtocol.GEMINI, WireProtocol.BEDROCK_CONVERSE}) is None
    # The deployment's own header wins; nothing passable at all costs nothing.
    assert for_upstream(passed, {WireProtocol.OPENAI_CHAT}, {"openai-beta"}) == {
        "idempotency-key": "retry-7f3a"
    }
    assert scan([(b"authorization", b"Bearer x"), (b"host", b"h")]).passed is None
    assert for_upstream(None, {WireProtocol.OPENAI_CHAT}) is None


def test_an_oversized_value_is_not_passed() -> None:
    raw = [(b"idempotency-key", b"k" * (MAX_VALUE + 1)), (b"openai-beta", b"b")]
    assert scan(raw).passed == {"openai-beta": "b"}
