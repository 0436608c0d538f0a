"""A garbled event in the middle of a pass-through stream (the client and the
upstream speak the same protocol, so its bytes are relayed untouched): real
loopback Anthropic and OpenAI Responses upstreams send one event whose data is
not JSON after the answer has started. The client gets what came before it,
then its own protocol's error event (never the garbage); the row says 502;
every slot comes back. The happy stream through the same gateway is relayed
whole, so the check cannot pass by cutting every stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support import anthropic_server
from tests.support.anthropic_server import AnthropicServer
from tests.support.openai_api_server import API_KEY as OPENAI_KEY
from tests.support.openai_api_server import OpenAIServer
from tests.support.servers import ServerThread

ASK = [{"role": "user", "content": "one two three four five"}]


@pytest.fixture
def gw(make_gateway: GatewayFactory) -> Iterator[Gateway]:
    ant = ServerThread(AnthropicServer().app()).start()
    oai = ServerThread(OpenAIServer(models=("gpt-4o-mini", "garbled-mid")).app()).start()

    def dep(name: str, provider: str, url: str, model: str, key: str) -> str:
        body = f"name: {name}, provider: {provider}, base_url: '{url}', model: {model}"
        return f"{{deployments: [{{{body}, api_key: '{key}'}}]}}"

    akey = anthropic_server.API_KEY
    try:
        yield make_gateway(
            f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
      claude: {dep("ant", "anthropic", ant.url, "claude-sonnet-4-5", akey)}
      claude-garbled: {dep("ant-garbled", "anthropic", ant.url, "garbled-mid", akey)}
      gpt: {dep("oai", "openai", oai.url + "/v1", "gpt-4o-mini", OPENAI_KEY)}
      gpt-garbled: {dep("oai-garbled", "openai", oai.url + "/v1", "garbled-mid", OPENAI_KEY)}
    """
        )
    finally:
        ant.stop()
        oai.stop()


def _settled(gw: Gateway) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pools = gw.services.traffic.pools.values()
        if not any(p.active or p.requests_in_flight or p.retries_in_flight for p in pools):
            return True
        time.sleep(0.02)
    return False


def _events(text: str) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines.get("event"), orjson.loads(lines["data"])))  # every one is JSON
    return out


def _messages(gw: Gateway, model: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 50, "stream": True, "messages": ASK}
    headers = {"x-api-key": gw.tenant_key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{gw.url}/v1/messages", json=body, headers=headers, timeout=30)


def _responses(gw: Gateway, model: str) -> httpx.Response:
    body = {"model": model, "input": "one two three four five", "stream": True, "store": False}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    return httpx.post(f"{gw.base_url}/responses", json=body, headers=headers, timeout=30)


def test_messages_stream_ends_with_anthropics_error_event(gw: Gateway) -> None:
    whole = _messages(gw, "claude")
    assert [e for e, _ in _events(whole.text)][-1] == "message_stop"
    resp = _messages(gw, "claude-garbled")
    assert resp.status_code == 200 and "not json" not in resp.text
    events = _events(resp.text)
    assert events[0][0] == "message_start"
    assert [d["delta"]["text"] for e, d in events if e == "content_block_delta"] == ["one"]
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "api_error", data
    assert "not a JSON object" in data["error"]["message"]
    row = gw.row_for(resp.headers["x-request-id"])
    assert (row["status"], row["error_type"]) == (502, "stream_protocol")
    assert gw.row_for(whole.headers["x-request-id"])["status"] == 200
    assert _settled(gw)


def test_the_anthropic_sdk_raises_on_it(gw: Gateway) -> None:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.tenant_key, max_retries=0) as sdk:
        texts: list[str] = []
        with (
            pytest.raises(anthropic.APIStatusError, match="not a JSON object"),
            sdk.messages.stream(model="claude-garbled", max_tokens=50, messages=ASK) as stream,
        ):
            texts.extend(stream.text_stream)
    assert texts == ["one"]
    assert _settled(gw)


def test_native_responses_stream_ends_with_its_error_event(gw: Gateway) -> None:
    whole = _responses(gw, "gpt")
    assert _events(whole.text)[-1][0] == "response.completed"
    resp = _responses(gw, "gpt-garbled")
    assert resp.status_code == 200 and "{garbled" not in resp.text
    events = _events(resp.text)
    assert events[0][0] == "response.created"
    deltas = [d["delta"] for e, d in events if e == "response.output_text.delta"]
    assert deltas == ["one"], deltas
    name, data = events[-1]
    assert name == "error" and data["type"] == "error", data
    assert "not a JSON object" in data["message"]
    row = gw.row_for(resp.headers["x-request-id"])
    assert (row["status"], row["error_type"]) == (502, "stream_protocol")
    assert _settled(gw)


def test_the_openai_sdk_hands_over_its_error_event(gw: Gateway) -> None:
    """The SDK hands a Responses stream's `error` event over rather than raising."""
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
        stream = sdk.responses.create(
            model="gpt-garbled", input="one two three four five", stream=True, store=False
        )
        events = list(stream)  # every event parsed: none is the garbage
    kinds = [e.type for e in events]
    assert "response.output_text.delta" in kinds and "response.completed" not in kinds
    last = events[-1]
    assert last.type == "error" and "not a JSON object" in last.message, last
    assert _settled(gw)
