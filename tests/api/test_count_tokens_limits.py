"""POST /v1/messages/count_tokens asks no upstream, but it is a request: it
needs a tenant's key and counts against the key's (and tenant's) requests per
minute, never their token limits or budgets. Driven by the real anthropic SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config

PROMPT = [{"role": "user", "content": "how many tokens are in this prompt of several words"}]


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(echo_config(upstream.base_url))


def _key_with(admin: httpx.Client, policy: dict[str, object]) -> str:
    made = admin.post("/admin/keys", json={"tenant": "default"}).json()
    resp = admin.put(f"/admin/limits/key/{made['id']}", json=policy)
    assert resp.status_code == 200, resp.text
    return str(made["key"])


def _client(gw: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=gw.url, max_retries=0)


def test_count_tokens_spends_the_keys_rpm_but_not_its_tokens(
    gw: Gateway, admin: httpx.Client
) -> None:
    # One token a minute and a budget of a millionth of a dollar: a count needs neither.
    key = _key_with(admin, {"rpm": 2, "tpm": 1, "usd_per_day": {"hard": 0.000001}})
    client = _client(gw, key)
    counted = [client.messages.count_tokens(model="echo", messages=PROMPT) for _ in range(2)]  # type: ignore[arg-type]
    assert all(c.input_tokens > 1 for c in counted)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.count_tokens(model="echo", messages=PROMPT)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "rate_limit_error"
    assert "requests per minute" in body["error"]["message"]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert body["request_id"] == caught.value.response.headers["x-request-id"]
    # The same counter as a generation's: this key's minute is spent for messages too.
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="echo", max_tokens=8, messages=PROMPT)  # type: ignore[arg-type]
    # Another key of the tenant is not affected, and reports its own remaining requests.
    other = _key_with(admin, {"rpm": 5})
    raw = _client(gw, other).messages.with_raw_response.count_tokens(
        model="echo",
        messages=PROMPT,  # type: ignore[arg-type]
    )
    assert raw.headers["x-ratelimit-remaining-requests"] == "4"
    assert raw.parse().input_tokens == counted[0].input_tokens


def test_count_tokens_needs_a_tenants_key(gw: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        _client(gw, "sk-fb-not-a-key").messages.count_tokens(model="echo", messages=PROMPT)  # type: ignore[arg-type]
    with pytest.raises(anthropic.PermissionDeniedError):
        _client(gw, gw.admin_key).messages.count_tokens(model="echo", messages=PROMPT)  # type: ignore[arg-type]


def test_a_generation_and_counts_share_the_tenants_rpm(gw: Gateway, admin: httpx.Client) -> None:
    resp = admin.put("/admin/limits/tenant/default", json={"rpm": 1})
    assert resp.status_code == 200, resp.text
    client = _client(gw, gw.tenant_key)
    client.messages.create(model="echo", max_tokens=8, messages=PROMPT)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.count_tokens(model="echo", messages=PROMPT)  # type: ignore[arg-type]
    assert "tenant 'default'" in str(caught.value)
