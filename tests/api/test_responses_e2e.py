"""POST /v1/responses end to end: the real `openai` client against Forebay on
loopback, to a Chat Completions upstream (translated), to the Anthropic test
server (translated through its codec) and to OpenAI's own API (native: relayed
untouched when nothing is stored, translated to Forebay's ids when it is)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel

from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support import anthropic_server
from tests.support.anthropic_server import AnthropicServer
from tests.support.openai_api_server import API_KEY as OPENAI_KEY
from tests.support.openai_api_server import OpenAIServer
from tests.support.raw_upstream import RawUpstream
from tests.support.servers import ServerThread

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    with RawUpstream() as server:
        yield server


@pytest.fixture
def ant() -> Iterator[tuple[AnthropicServer, ServerThread]]:
    fake = AnthropicServer()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


@pytest.fixture
def oai_api() -> Iterator[tuple[OpenAIServer, ServerThread]]:
    fake = OpenAIServer(models=("gpt-4o-mini", "garbled", "drop"))
    with ServerThread(fake.app()) as thread:
        yield fake, thread


@pytest.fixture
def gw(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    raw: RawUpstream,
    ant: tuple[AnthropicServer, ServerThread],
    oai_api: tuple[OpenAIServer, ServerThread],
) -> Gateway:
    fake = upstream.base_url
    a_url, o_url = ant[1].url, oai_api[1].url
    akey = anthropic_server.API_KEY

    def openai_dep(name: str, model: str) -> str:
        return (
            f"{{name: {name}, provider: openai, base_url: '{o_url}/v1', model: {model}, "
            f"api_key: '{OPENAI_KEY}'}}"
        )

    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    resilience: {{backoff_base_ms: 10, backoff_cap_ms: 50}}
    models:
      echo:
        deployments:
          - {{name: fake-echo, base_url: "{fake}", model: echo,
             api_key: sk-upstream-secret-DO-NOT-LEAK}}
      tools:
        deployments: [{{name: fake-tools, base_url: "{fake}", model: tools}}]
      mid:
        deployments: [{{name: fake-mid, base_url: "{fake}", model: mid-error}}]
      broken:
        deployments: [{{name: fake-break, base_url: "{fake}", model: break-stream}}]
      raw:
        deployments:
          - {{name: dep-raw, base_url: "{raw.base_url}", model: not-json, max_concurrency: 4,
             timeout_s: 2, adaptive_concurrency: false}}
      claude:
        deployments:
          - {{name: ant, provider: anthropic, base_url: '{a_url}', model: claude-sonnet-4-5,
             api_key: '{akey}'}}
      gpt:
        deployments: [{openai_dep("oai", "gpt-4o-mini")}]
      gpt-garbled:
        deployments: [{openai_dep("oai-garbled", "garbled")}]
      gpt-drop:
        deployments: [{openai_dep("oai-drop", "drop")}]
    """
    )


@pytest.fixture
def client(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
        yield sdk


def _settled(gw: Gateway) -> dict[str, dict[str, int]]:
    """The pools that still hold something, once every request is over (or 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        busy = {
            alias: {"active": p.active, "requests": p.requests_in_flight, "retries": p.retries_in_flight}
            for alias, p in gw.services.traffic.pools.items()
            if p.active or p.requests_in_flight or p.retries_in_flight
        }
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.02)


def _post(gw: Gateway, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key or gw.tenant_key}"}
    return httpx.post(f"{gw.base_url}/responses", json=body, headers=headers, timeout=30)


def _events(resp: httpx.Response) -> list[dict[str, Any]]:
    out = []
    for frame in resp.text.split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: "):
                out.append(orjson.loads(line[6:]))
    return out


# -- happy paths -----------------------------------------------------------------------


def test_create_with_a_string_input_and_instructions(
    gw: Gateway, client: openai.OpenAI, upstream: Upstream
) -> None:
    resp = client.responses.create(
        model="echo", instructions="You echo.", input="hello there friend"
    )
    assert resp.id.startswith("resp_") and resp.status == "completed"
    assert resp.output_text == "hello there friend"
    assert resp.model == "echo" and resp.instructions == "You echo."
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (6, 3)
    sent = upstream.fake.seen[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"][0] == {"role": "system", "content": "You echo."}
    row = gw.wait_rows(1)[-1]
    assert row["endpoint"] == "responses" and row["protocol"] == "openai_responses"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (6, 3)
    assert row["status"] == 200 and not row["tokens_estimated"]
    got = client.responses.retrieve(resp.id)  # stored by default
    assert got.model_dump() == resp.model_dump()
