"""Hosted tools (Responses' web_search, ...; Anthropic's server tools) on aliases
that mix native and translating deployments, and on aliases with none native
(gateway/hosted.py). Real loopback servers: the OpenAI API (Responses
natively), an OpenAI-compatible Chat server and the Anthropic API."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from forebay.config.load import load_settings
from forebay.errors import ConfigError
from tests.conftest import Gateway, GatewayFactory
from tests.support import anthropic_server
from tests.support.anthropic_server import AnthropicServer
from tests.support.openai_api_server import API_KEY as OPENAI_KEY
from tests.support.openai_api_server import OpenAIServer
from tests.support.openai_server import FakeUpstream
from tests.support.servers import ServerThread

WEB_SEARCH = {"type": "web_search"}
SERVER_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
POLICIES = ("ordered", "weighted", "least_loaded", "cheapest_within_slo", "prefix_affinity")
PROMPTS = [f"question {i}: what is new?" for i in range(8)]


@pytest.fixture
def native() -> Iterator[tuple[OpenAIServer, ServerThread]]:
    fake = OpenAIServer()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


@pytest.fixture
def chat() -> Iterator[tuple[FakeUpstream, ServerThread]]:
    fake = FakeUpstream()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


@pytest.fixture
def ant() -> Iterator[tuple[AnthropicServer, ServerThread]]:
    fake = AnthropicServer()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more: connecting is refused


def _config(
    chat_url: str,
    native_url: str,
    ant_url: str,
    *,
    policy: str = "ordered",
    head: str = "",
) -> str:
    # The Chat deployment comes first, is cheaper and weighs more: every policy
    # would pick it for a request without hosted tools.
    cheap = "price: {input_per_million: 0.1, output_per_million: 0.1}, weight: 100"
    dear = "price: {input_per_million: 9, output_per_million: 9}, weight: 1"
    chat_dep = f"{{name: chat-dep, base_url: '{chat_url}/v1', model: echo, {cheap}}}"
    return f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    probes: {{enabled: false}}
    resilience: {{backoff_base_ms: 1, backoff_cap_ms: 5}}
    {head}
    models:
      mixed:
        routing: {{policy: {policy}}}
        deployments:
          - {chat_dep}
          - {{name: openai-dep, provider: openai, base_url: '{native_url}/v1',
              model: gpt-4o-mini, api_key: '{OPENAI_KEY}', {dear}}}
      mixed-claude:
        routing: {{policy: {policy}}}
        deployments:
          - {chat_dep.replace("chat-dep", "chat-dep2")}
          - {{name: claude-dep, provider: anthropic, base_url: '{ant_url}',
              model: claude-sonnet-4-5, api_key: '{anthropic_server.API_KEY}', {dear}}}
      chat-only:
        deployments:
          - {chat_dep.replace("chat-dep", "chat-dep3")}
      chat-strict:
        hosted_tools: refuse
        deployments:
          - {chat_dep.replace("chat-dep", "chat-dep4")}
    """


@pytest.fixture
def gw(
    make_gateway: GatewayFactory,
    chat: tuple[FakeUpstream, ServerThread],
    native: tuple[OpenAIServer, ServerThread],
    ant: tuple[AnthropicServer, ServerThread],
) -> Gateway:
    """The gateway of the tests that need no other configuration."""
    return _gateway(make_gateway, chat, native, ant)


def _gateway(
    make_gateway: GatewayFactory,
    chat: tuple[FakeUpstream, ServerThread],
    native: tuple[OpenAIServer, ServerThread],
    ant: tuple[AnthropicServer, ServerThread],
    **kw: Any,
) -> Gateway:
    return make_gateway(_config(chat[1].url, native[1].url, ant[1].url, **kw))


def _responses(gw: Gateway, model: str, text: str = "news?", **extra: Any) -> httpx.Response:
    body = {"model": model, "input": text, "store": False, **extra}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    return httpx.post(f"{gw.base_url}/responses", json=body, headers=headers, timeout=30)


def _messages(gw: Gateway, model: str, text: str = "news?", **extra: Any) -> httpx.Response:
    body = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    headers = {"x-api-key": gw.tenant_key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{gw.base_url}/messages", json=body, headers=headers, timeout=30)


def _deployment(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.headers["x-forebay-route"].split(": ", 1)[1].split(" ", 1)[0]


def _returned(gw: Gateway) -> None:
    for pool in gw.services.traffic.pools.values():
        assert pool.active == 0 and pool.requests_in_flight == 0 and pool.retries_in_flight == 0
        assert all(s.inflight == 0 for s in pool.states)


# -- a mixed alias: hosted tools go to the native deployment ---------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_a_hosted_tool_goes_to_the_native_deployment_whatever_the_policy(
    make_gateway: GatewayFactory,
    chat: tuple[FakeUpstream, ServerThread],
    native: tuple[OpenAIServer, ServerThread],
    ant: tuple[AnthropicServer, ServerThread],
    policy: str,
) -> None:
    gw = _gateway(make_gateway, chat, native, ant, policy=policy)
    # Without a hosted tool the policy picks the Chat deployment (at least once):
    # the assertions below could fail.
    plain = {_deployment(_responses(gw, "mixed", p)) for p in PROMPTS}
    assert "chat-dep" in plain, plain
    before = len(chat[0].seen)
    for prompt in PROMPTS:
        resp = _responses(gw, "mixed", prompt, tools=[WEB_SEARCH])
        assert _deployment(resp) == "openai-dep", resp.headers["x-forebay-route"]
        route = resp.headers["x-forebay-route"]
        assert "chat-dep skipped: tools[0] (web_search tool) needs openai_responses natively" in (
            route
        ), route
        assert "x-forebay-dropped-tools" not in resp.headers
        assert native[0].seen[-1].body["tools"] == [WEB_SEARCH]  # relayed as sent
    assert len(chat[0].seen) == before
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["deployment"] == "openai-dep" and "needs openai_responses natively" in str(
        row["route_reason"]
    )
    _returned(gw)


@pytest.mark.parametrize("policy", ("ordered", "cheapest_within_slo"))
def test_a_server_tool_goes_to_the_anthropic_deployment(
    make_gateway: GatewayFactory,
    chat: tuple[FakeUpstream, ServerThread],
    native: tuple[OpenAIServer, ServerThread],
    ant: tuple[AnthropicServer, ServerThread],
    policy: str,
) -> None:
    gw = _gateway(make_gateway, chat, native, ant, policy=policy)
    assert _deployment(_messages(gw, "mixed-claude")) == "chat-dep2"
    resp = _messages(gw, "mixed-claude", tools=[SERVER_SEARCH, WEATHER])
    assert _deployment(resp) == "claude-dep"
    assert (
        "chat-dep2 skipped: tools.0 (web_search_20250305 tool) needs anthropic_messages"
        in (resp.headers["x-forebay-route"])
    )
    assert ant[0].seen[-1].body["tools"][0] == SERVER_SEARCH
    # Messages' container is native-only too: it also goes to Anthropic.
    resp = _messages(gw, "mixed-claude", container="container_011")
    assert _deployment(resp) == "claude-dep"
    _returned(gw)


def test_with_the_native_deployment_dead_a_hosted_tool_does_not_fail_over_to_chat(
    make_gateway: GatewayFactory,
    chat: tuple[FakeUpstream, ServerThread],
    ant: tuple[AnthropicServer, ServerThread],
) -> None:
    gw = make_gateway(_config(chat[1].url, f"http://127.0.0.1:{_closed_port()}", ant[1].url))
    resp = _responses(gw, "mixed", tools=[WEB_SEARCH])
    assert resp.status_code == 502, resp.text
    assert "openai-dep" in resp.json()["error"]["message"]
    assert chat[0].seen == []  # never the Chat deployment, which could not run web_search
    row = gw.row_for(resp.headers["x-request-id"])
    reason = str(row["route_reason"])
    assert row["deployment"] == "openai-dep" and "chat-dep skipped" in reason, reason
    # Once it is ejected: a 503 that says which kind of deployment is missing.
    pool = gw.services.traffic.pools["mixed"]
    (state,) = [s for s in pool.states if s.name == "openai-dep"]
    state.ejected_until = float("inf")
    resp = _responses(gw, "mixed", tools=[WEB_SEARCH])
    assert resp.status_code == 503, resp.text
    message = resp.json()["error"]["message"]
    assert "'mixed' that speaks openai_responses natively" in message, message
    assert "web_search" in message
    assert chat[0].seen == []
    # The same alias still serves requests the Chat deployment can.
    assert _deployment(_responses(gw, "mixed")) == "chat-dep"
    _returned(gw)


# -- no native deployment: drop what is not forced, refuse what is -----------------------------


def test_an_unforced_hosted_tool_is_dropped_for_a_chat_only_alias(
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
) -> None:
    fn = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    resp = _responses(gw, "chat-only", tools=[WEB_SEARCH, fn, {"type": "file_search"}])
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-forebay-dropped-tools"] == "web_search, file_search"
    assert "dropped hosted tools web_search, file_search" in resp.headers["x-forebay-route"]
    sent = chat[0].seen[-1].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["lookup"]
    row = gw.row_for(resp.headers["x-request-id"])
    assert "dropped hosted tools" in str(row["route_reason"]) and row["status"] == 200
    # Streamed, the same.
    with httpx.stream(
        "POST",
        f"{gw.base_url}/responses",
        json={"model": "chat-only", "input": "hi", "stream": True, "tools": [WEB_SEARCH]},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
        timeout=30,
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-forebay-dropped-tools"] == "web_search"
        assert b"response.completed" in stream.read()
    _returned(gw)


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [WEB_SEARCH], "tool_choice": {"type": "web_search"}},
        {"tools": [WEB_SEARCH], "tool_choice": "required"},  # nothing else to call
    ],
)
def test_a_forced_hosted_tool_is_refused_for_a_chat_only_alias(
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
    extra: dict[str, Any],
) -> None:
    resp = _responses(gw, "chat-only", **extra)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == "not_translatable" and err["type"] == "invalid_request_error"
    assert (
        "Model 'chat-only' has no deployment that speaks openai_responses natively"
        in (err["message"])
    )
    assert "tools[0] (web_search tool)" in err["message"]
    assert chat[0].seen == []
    # On the mixed alias the same request is served natively.
    assert _deployment(_responses(gw, "mixed", **extra)) == "openai-dep"
    _returned(gw)


def test_refuse_setting_refuses_an_unforced_hosted_tool(
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
) -> None:
    resp = _responses(gw, "chat-strict", tools=[WEB_SEARCH])
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == "not_translatable" and err["param"] == "tools[0]"
    assert "hosted_tools setting is refuse" in err["message"]
    resp = _messages(gw, "chat-strict", tools=[SERVER_SEARCH])
    assert resp.status_code == 400, resp.text
    assert resp.json()["type"] == "error"  # Anthropic's envelope
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert "tools.0 (web_search_20250305 tool)" in resp.json()["error"]["message"]
    assert chat[0].seen == []
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["status"] == 400
    _returned(gw)


def test_a_global_refuse_and_an_alias_that_drops(
    make_gateway: GatewayFactory,
    chat: tuple[FakeUpstream, ServerThread],
    native: tuple[OpenAIServer, ServerThread],
    ant: tuple[AnthropicServer, ServerThread],
) -> None:
    config = _config(chat[1].url, native[1].url, ant[1].url, head="hosted_tools: refuse")
    strict = "      chat-strict:\n"
    config = config.replace(f"{strict}        hosted_tools: refuse", strict.rstrip("\n"))
    config = config.replace("      chat-only:\n", "      chat-only:\n        hosted_tools: drop\n")
    gw = make_gateway(config)
    assert _responses(gw, "chat-strict", tools=[WEB_SEARCH]).status_code == 400
    resp = _responses(gw, "chat-only", tools=[WEB_SEARCH])
    assert resp.headers["x-forebay-dropped-tools"] == "web_search"


def test_server_tools_are_dropped_or_refused_for_a_chat_only_alias(
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
) -> None:
    resp = _messages(gw, "chat-only", tools=[SERVER_SEARCH, WEATHER])
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-forebay-dropped-tools"] == "web_search"
    sent = chat[0].seen[-1].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    # Forced: named by tool_choice, or `any` with no client tool.
    for choice, tools in (
        ({"type": "tool", "name": "web_search"}, [SERVER_SEARCH, WEATHER]),
        ({"type": "any"}, [SERVER_SEARCH]),
    ):
        resp = _messages(gw, "chat-only", tools=tools, tool_choice=choice)
        assert resp.status_code == 400, resp.text
        message = resp.json()["error"]["message"]
        assert "Model 'chat-only'" in message and "anthropic_messages natively" in message
    # Messages' mcp_servers cannot be dropped.
    servers = [{"type": "url", "url": "https://mcp.example/sse", "name": "x"}]
    resp = _messages(gw, "chat-only", mcp_servers=servers)
    assert resp.status_code == 400 and "mcp_servers" in resp.json()["error"]["message"]
    assert len(chat[0].seen) == 1
    _returned(gw)


# -- abuse ---------------------------------------------------------------------------------------


def test_hostile_hosted_tool_types_stay_out_of_headers(
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
) -> None:
    tools = [{"type": "evil\r\nset-cookie: a=b"}, *({"type": f"t{i}" * 30} for i in range(500))]
    resp = _responses(gw, "chat-only", tools=tools)
    assert resp.status_code == 200, resp.text
    dropped = resp.headers["x-forebay-dropped-tools"]
    assert "set-cookie" not in resp.headers and "\r" not in dropped and "\n" not in dropped
    assert dropped.startswith("evil__set-cookie:_a_b, ") and dropped.endswith(", +485 more")
    assert len(dropped) < 2000
    # On the mixed alias the route note names a few of them and counts the rest.
    resp = _responses(gw, "mixed", tools=tools)
    assert _deployment(resp) == "openai-dep"
    route = resp.headers["x-forebay-route"]
    assert "and 498 more needs openai_responses natively" in route and len(route) < 1000, route
    resp = _responses(gw, "chat-strict", tools=tools)
    assert resp.status_code == 400 and len(resp.json()["error"]["message"]) < 1000
    _returned(gw)


def test_hosted_tools_takes_drop_or_refuse_only(tmp_path: Path) -> None:
    path = tmp_path / "forebay.yaml"
    path.write_text(
        "models:\n  m:\n    hosted_tools: ignore\n"
        "    deployments: [{name: d, base_url: 'http://127.0.0.1:1/v1', model: x}]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path, data_dir=tmp_path / "data")
    assert "hosted_tools" in str(err.value)
