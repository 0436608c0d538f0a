"""POST /v1/messages/count_tokens asks the alias's provider when it has a
counting endpoint, with the prompt translated as generation translates it, and
falls back to the estimate (saying so in x-forebay-token-count) when it has
none or fails. Driven by the real anthropic SDK against loopback servers that
speak each provider's documented counting endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support import anthropic_server, bedrock_server, gemini_server
from tests.support.provider_fakes import Fakes, running_fakes

SYSTEM = "answer in one word"  # 4 words
PROMPT: Any = [{"role": "user", "content": "how many tokens are in this prompt"}]  # 7 words
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "weather by city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
HEADER = "x-forebay-token-count"


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as f:
        yield f


def _config(f: Fakes, chat_url: str) -> str:
    key = anthropic_server.API_KEY
    ant = f"provider: anthropic, base_url: '{f.urls['anthropic']}', api_key: '{key}'"
    gem = f"provider: gemini, base_url: '{f.urls['gemini']}', api_key: '{gemini_server.API_KEY}'"
    aws = (
        f"provider: bedrock, base_url: '{f.urls['bedrock']}', aws: {{region: "
        f"{bedrock_server.REGION}, access_key_id: {bedrock_server.ACCESS_KEY}, "
        f"secret_access_key: '{bedrock_server.SECRET_KEY}'}}"
    )
    return f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
      claude: {{deployments: [{{name: ant, {ant}, model: claude-sonnet-4-5}}]}}
      gem: {{deployments: [{{name: gem, {gem}, model: gemini-echo}}]}}
      bed: {{deployments: [{{name: bed, {aws}, model: echo}}]}}
      chat: {{deployments: [{{name: chat, base_url: '{chat_url}', model: echo}}]}}
      overloaded: {{deployments: [{{name: ant-529, {ant}, model: overloaded}}]}}
      cannot: {{deployments: [{{name: bed-nc, {aws}, model: no-count}}]}}
      gem-429: {{deployments: [{{name: gem-429, {gem}, model: gemini-429}}]}}
      mixed:
        deployments:
          - {{name: mixed-chat, base_url: '{chat_url}', model: echo}}
          - {{name: mixed-gem, {gem}, model: gemini-echo}}
    """


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream, fakes: Fakes) -> Gateway:
    return make_gateway(_config(fakes, upstream.base_url))


def _count(gw: Gateway, model: str, **kw: Any) -> tuple[int, str]:
    client = anthropic.Anthropic(api_key=gw.tenant_key, base_url=gw.url, max_retries=0)
    raw = client.messages.with_raw_response.count_tokens(model=model, messages=PROMPT, **kw)
    return raw.parse().input_tokens, raw.headers[HEADER]


def test_an_anthropic_upstream_counts_with_only_the_fields_it_takes(
    gw: Gateway, fakes: Fakes
) -> None:
    before = len(fakes.anthropic.seen)
    tokens, source = _count(gw, "claude", system=SYSTEM)
    assert (tokens, source) == (11, "upstream")  # 4 + 7 words, as the server counts
    seen = [s for s in fakes.anthropic.seen[before:] if s.path != "/v1/models"]  # probes
    assert [s.path for s in seen] == ["/v1/messages/count_tokens"]
    assert seen[0].body["model"] == "claude-sonnet-4-5"  # the deployment's model, not the alias
    assert seen[0].headers["x-api-key"] == anthropic_server.API_KEY


def test_a_gemini_upstream_counts_the_translated_request(gw: Gateway, fakes: Fakes) -> None:
    before = len(fakes.gemini.seen)
    tokens, source = _count(gw, "gem", system=SYSTEM, tools=TOOLS)
    assert (tokens, source) == (11, "upstream")
    (seen,) = fakes.gemini.seen[before:]
    assert seen.path == "/v1beta/models/gemini-echo:countTokens"
    request = seen.body["generateContentRequest"]
    assert request["model"] == "models/gemini-echo"
    assert request["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
    assert request["contents"] == [{"role": "user", "parts": [{"text": PROMPT[0]["content"]}]}]
    assert request["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


def test_a_bedrock_upstream_counts_the_converse_input(gw: Gateway, fakes: Fakes) -> None:
    before = len(fakes.bedrock.seen)
    tokens, source = _count(gw, "bed", system=SYSTEM)
    assert (tokens, source) == (11, "upstream")
    (seen,) = [s for s in fakes.bedrock.seen[before:] if s.path.endswith("count-tokens")]
    assert seen.path == "/model/echo/count-tokens"
    assert set(seen.body["input"]["converse"]) == {"messages", "system"}


def test_a_chat_upstream_has_no_counter_so_the_estimate_is_answered(gw: Gateway) -> None:
    tokens, source = _count(gw, "chat")
    assert source == "estimate"
    assert tokens == len(PROMPT[0]["content"]) // 4


def test_the_first_deployment_that_can_count_is_asked(gw: Gateway, fakes: Fakes) -> None:
    before = len(fakes.gemini.seen)
    assert _count(gw, "mixed") == (7, "upstream")
    assert len(fakes.gemini.seen) == before + 1


@pytest.mark.parametrize("model", ["overloaded", "cannot", "gem-429"])
def test_an_upstream_that_fails_gets_the_estimate_and_the_header_says_so(
    gw: Gateway, fakes: Fakes, model: str
) -> None:
    tokens, source = _count(gw, model)
    assert source == "estimate"
    assert tokens == len(PROMPT[0]["content"]) // 4


def test_a_dead_upstream_gets_the_estimate(make_gateway: GatewayFactory) -> None:
    key = anthropic_server.API_KEY
    ant = f"provider: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{key}'"
    gw = make_gateway(f"models:\n  claude: {{deployments: [{{name: dead, {ant}, model: x}}]}}\n")
    assert _count(gw, "claude")[1] == "estimate"


def test_a_rate_limited_count_asks_no_upstream(
    gw: Gateway, fakes: Fakes, admin: httpx.Client
) -> None:
    made = admin.post("/admin/keys", json={"tenant": "default"}).json()
    resp = admin.put(f"/admin/limits/key/{made['id']}", json={"rpm": 1})
    assert resp.status_code == 200, resp.text
    client = anthropic.Anthropic(api_key=made["key"], base_url=gw.url, max_retries=0)
    client.messages.count_tokens(model="claude", messages=PROMPT)
    before = _counts(fakes)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.count_tokens(model="claude", messages=PROMPT)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert _counts(fakes) == before


def _counts(fakes: Fakes) -> int:
    return sum(s.path.endswith("count_tokens") for s in fakes.anthropic.seen)


def test_a_hostile_body_is_refused_in_anthropics_envelope_before_any_upstream(
    gw: Gateway, fakes: Fakes
) -> None:
    before = len(fakes.gemini.seen)
    with httpx.Client(base_url=gw.url) as http:
        for body in (
            {"model": "gem", "messages": "not a list"},
            {"model": "gem", "messages": [{"role": "robot", "content": "x"}]},
            {"model": "nope", "messages": PROMPT},
        ):
            resp = http.post(
                "/v1/messages/count_tokens", json=body, headers={"x-api-key": gw.tenant_key}
            )
            assert resp.status_code in (400, 404), resp.text
            assert resp.json()["type"] == "error"
            assert HEADER not in resp.headers
    assert len(fakes.gemini.seen) == before
