"""Options crossing to an upstream of another protocol (protocols/option_policy.py):
reasoning effort mapped to each provider's documented control, sampling
options the upstream lacks dropped and named in x-forebay-dropped-params, and
an output form it cannot give refused with a 400 naming the caller's
parameter, before any upstream is asked. Each case checks what the loopback
provider server really received."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support import anthropic_server, bedrock_server, gemini_server
from tests.support.provider_fakes import Fakes, running_fakes

DROPPED = "x-forebay-dropped-params"
CLAUDE_ON_AWS = "us.anthropic.claude-sonnet-4-5-20250929-v1"


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as f:
        yield f


@pytest.fixture
def gw(make_gateway: GatewayFactory, fakes: Fakes) -> Gateway:
    key = anthropic_server.API_KEY
    ant = f"provider: anthropic, base_url: '{fakes.urls['anthropic']}', api_key: '{key}'"
    gem_key = gemini_server.API_KEY
    gem = f"provider: gemini, base_url: '{fakes.urls['gemini']}', api_key: '{gem_key}'"
    aws = (
        f"provider: bedrock, base_url: '{fakes.urls['bedrock']}', aws: {{region: "
        f"{bedrock_server.REGION}, access_key_id: {bedrock_server.ACCESS_KEY}, "
        f"secret_access_key: '{bedrock_server.SECRET_KEY}'}}"
    )
    return make_gateway(
        f"""
        models:
          claude: {{deployments: [{{name: ant, {ant}, model: claude-sonnet-4-5}}]}}
          gem25: {{deployments: [{{name: gem25, {gem}, model: gemini-2.5-flash}}]}}
          gem3pro: {{deployments: [{{name: gem3pro, {gem}, model: gemini-3-pro-preview}}]}}
          gem3flash: {{deployments: [{{name: gem3flash, {gem}, model: gemini-3-flash}}]}}
          nova: {{deployments: [{{name: nova, {aws}, model: echo}}]}}
          claude-aws: {{deployments: [{{name: claude-aws, {aws}, model: {CLAUDE_ON_AWS}}}]}}
        """
    )


def _chat(gw: Gateway, model: str, **options: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "a b c"}], **options}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        if body.get("stream"):
            with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
                resp.read()
                return resp
        return http.post("/v1/chat/completions", json=body, headers=headers)


def _last(seen: list[Any], suffix: str) -> dict[str, Any]:
    bodies = [s.body for s in seen if s.path.endswith(suffix)]
    assert bodies, f"the upstream got no {suffix}"
    body: dict[str, Any] = bodies[-1]
    return body


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_drops_seed_and_penalties_and_says_so(
    gw: Gateway, fakes: Fakes, stream: bool
) -> None:
    opts = {"seed": 7, "frequency_penalty": 0.5, "presence_penalty": 0.1, "temperature": 0.2}
    resp = _chat(gw, "nova", stream=stream, **opts)
    assert resp.status_code == 200, resp.text
    assert resp.headers[DROPPED] == "seed,presence_penalty,frequency_penalty"
    sent = _last(fakes.bedrock.seen, "/converse-stream" if stream else "/converse")
    assert sent["inferenceConfig"] == {"temperature": 0.2}
    assert "seed" not in str(sent) and "enalty" not in str(sent)


def test_gemini_takes_seed_and_penalties_so_nothing_is_dropped(gw: Gateway, fakes: Fakes) -> None:
    resp = _chat(gw, "gem25", seed=7, frequency_penalty=0.5)
    assert resp.status_code == 200, resp.text
    assert DROPPED not in resp.headers
    config = _last(fakes.gemini.seen, ":generateContent")["generationConfig"]
    assert (config["seed"], config["frequencyPenalty"]) == (7, 0.5)


@pytest.mark.parametrize(
    ("model", "fmt"),
    [
        ("nova", {"type": "json_object"}),
        ("claude", {"type": "json_object"}),
        ("claude", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ],
)
def test_an_output_form_the_upstream_lacks_is_a_400_naming_response_format(
    gw: Gateway, fakes: Fakes, model: str, fmt: dict[str, Any]
) -> None:
    before = _generations(fakes)
    resp = _chat(gw, model, response_format=fmt)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == "response_format" and err["code"] == "unsupported_parameter"
    assert fmt["type"] in err["message"]
    assert _generations(fakes) == before  # refused before any upstream was asked


def _generations(fakes: Fakes) -> int:
    seen = [*fakes.bedrock.seen, *fakes.anthropic.seen]
    # Bedrock's probe posts a Converse with no messages: not a generation.
    return sum(
        s.path.endswith(("/converse", "/v1/messages")) and bool(s.body.get("messages"))
        for s in seen
    )


def test_a_responses_caller_gets_its_own_parameter_name(gw: Gateway, fakes: Fakes) -> None:
    body = {"model": "nova", "input": "a b c", "text": {"format": {"type": "json_object"}}}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    resp = httpx.post(f"{gw.url}/v1/responses", json=body, headers=headers, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "text.format"


def test_bedrock_json_schema_still_crosses(gw: Gateway, fakes: Fakes) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    resp = _chat(gw, "nova", response_format=fmt)
    assert resp.status_code == 200, resp.text
    assert "outputConfig" in _last(fakes.bedrock.seen, "/converse")


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gem25", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gem25", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gem25", "none", {"thinkingBudget": 0}),
        ("gem3pro", "medium", {"thinkingLevel": "high", "includeThoughts": True}),
        ("gem3pro", "minimal", {"thinkingLevel": "low", "includeThoughts": True}),
        ("gem3flash", "minimal", {"thinkingLevel": "minimal", "includeThoughts": True}),
        ("gem3flash", "medium", {"thinkingLevel": "medium", "includeThoughts": True}),
    ],
)
def test_gemini_maps_reasoning_effort(
    gw: Gateway, fakes: Fakes, model: str, effort: str, thinking: dict[str, Any]
) -> None:
    resp = _chat(gw, model, reasoning_effort=effort)
    assert resp.status_code == 200, resp.text
    assert DROPPED not in resp.headers
    sent = _last(fakes.gemini.seen, ":generateContent")
    assert sent["generationConfig"]["thinkingConfig"] == thinking


def test_an_effort_gemini_has_no_control_for_is_dropped_and_announced(
    gw: Gateway, fakes: Fakes
) -> None:
    resp = _chat(gw, "gem25", reasoning_effort="turbo")
    assert resp.status_code == 200, resp.text
    assert resp.headers[DROPPED] == "reasoning_effort"
    thinking = _last(fakes.gemini.seen, ":generateContent")["generationConfig"]["thinkingConfig"]
    assert "thinkingBudget" not in thinking and "thinkingLevel" not in thinking


def test_claude_on_bedrock_gets_a_thinking_budget_under_max_tokens(
    gw: Gateway, fakes: Fakes
) -> None:
    resp = _chat(gw, "claude-aws", reasoning_effort="medium", max_tokens=20000)
    assert resp.status_code == 200, resp.text
    sent = _last(fakes.bedrock.seen, "/converse")
    thinking = {"type": "enabled", "budget_tokens": 8192}
    assert sent["additionalModelRequestFields"]["thinking"] == thinking
    resp = _chat(gw, "claude-aws", reasoning_effort="high", max_tokens=4000)
    assert resp.status_code == 200, resp.text
    sent = _last(fakes.bedrock.seen, "/converse")
    assert sent["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 3999


def test_a_bedrock_model_without_a_thinking_control_drops_the_effort(
    gw: Gateway, fakes: Fakes
) -> None:
    resp = _chat(gw, "nova", reasoning_effort="high")
    assert resp.status_code == 200, resp.text
    assert resp.headers[DROPPED] == "reasoning_effort"
    assert "additionalModelRequestFields" not in _last(fakes.bedrock.seen, "/converse")
    # Too small a max_tokens for Anthropic's least budget: no thinking, announced.
    resp = _chat(gw, "claude-aws", reasoning_effort="high", max_tokens=500)
    assert resp.headers[DROPPED] == "reasoning_effort"


def test_anthropic_maps_effort_and_drops_seed(gw: Gateway, fakes: Fakes) -> None:
    resp = _chat(gw, "claude", reasoning_effort="low", seed=3, max_tokens=3000)
    assert resp.status_code == 200, resp.text
    assert resp.headers[DROPPED] == "seed"
    sent = _last(fakes.anthropic.seen, "/v1/messages")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "seed" not in sent


def test_a_zero_max_tokens_gets_anthropics_default_and_the_header_agrees(
    gw: Gateway, fakes: Fakes
) -> None:
    # max_tokens 0 is spec-valid for a Chat caller; Anthropic requires a positive
    # one, so the upstream gets the default, and the effort fits under it: the
    # header must not announce as dropped what the upstream was sent.
    resp = _chat(gw, "claude", reasoning_effort="low", max_tokens=0)
    assert resp.status_code == 200, resp.text
    assert DROPPED not in resp.headers
    sent = _last(fakes.anthropic.seen, "/v1/messages")
    assert sent["max_tokens"] == 4096
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
