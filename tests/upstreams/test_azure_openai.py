"""The Azure OpenAI adapter against a loopback server that speaks Azure's
routes: Chat Completions on the deployment route with api-version, Responses
on the v1 route with the deployment as the body's model, the api-key header
or an Entra ID bearer token, Azure's error bodies and its content filter, a
wrong key or api-version, the probe; and, through a gateway, that only the
deployment's key reaches Azure. The failures it shares with the other adapters
(its 429 retry headers, garbled and dropped answers, a mid-stream error,
timeouts, a dead port) are AZURE_OPENAI's rows in failure_modes.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.gateway.failures import as_api_error
from forebay.gateway.redact import Redactor
from forebay.upstreams.azure_openai import AzureOpenAIUpstream
from forebay.upstreams.base import Endpoint, WireProtocol
from forebay.upstreams.registry import remote_upstream
from tests.conftest import GatewayFactory
from tests.support.azure_openai_server import API_KEY, AzureServer
from tests.support.deployments import deployment
from tests.support.servers import ServerThread
from tests.upstreams import calls, failure_modes
from tests.upstreams.failure_modes import AZURE_OPENAI

Served = tuple[AzureServer, ServerThread]
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.test-entra-token"


@pytest.fixture
def server() -> Iterator[Served]:
    fake = AzureServer()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


def _dep(thread: ServerThread, name: str = "gpt-4o-prod", extra: str = "") -> Deployment:
    more = f", {extra}" if extra else ""
    auth = "" if "azure_ad_token" in extra else f", api_key: '{API_KEY}'"
    return deployment(
        f"provider: azure_openai, base_url: '{thread.url}', model: gpt-4o, "
        f"azure_deployment: {name}{auth}{more}"
    )


def test_it_speaks_chat_and_responses() -> None:
    assert AzureOpenAIUpstream.wire == {WireProtocol.OPENAI_CHAT, WireProtocol.OPENAI_RESPONSES}


async def test_chat_goes_to_the_deployment_route_with_api_version_and_api_key(
    server: Served,
) -> None:
    fake, thread = server
    up = remote_upstream(_dep(thread))
    assert isinstance(up, AzureOpenAIUpstream)
    try:
        reply = await up.complete(Endpoint.CHAT, calls.chat())
    finally:
        await up.close()
    body = orjson.loads(reply.body)
    assert body["choices"][0]["message"]["content"] == "hello there world"
    assert body["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    (seen,) = fake.seen
    assert seen.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert seen.query == "api-version=2024-10-21"
    assert seen.headers["api-key"] == API_KEY and "authorization" not in seen.headers
    assert seen.raw == orjson.dumps(calls.chat())  # the body as given, model and all


async def test_responses_go_to_the_v1_route_naming_the_deployment(server: Served) -> None:
    fake, thread = server
    up = AzureOpenAIUpstream(_dep(thread))
    try:
        reply = await up.complete(Endpoint.RESPONSES, calls.responses(store=False))
    finally:
        await up.close()
    assert orjson.loads(reply.body)["output"][0]["content"][0]["text"] == "hello there world"
    (seen,) = fake.seen
    assert (seen.path, seen.query) == ("/openai/v1/responses", "")
    assert seen.body == {
        **calls.responses(store=False),
        "model": "gpt-4o-prod",
    }


async def test_api_version_is_configurable_and_a_bearer_token_replaces_the_key(
    server: Served,
) -> None:
    fake, thread = server
    fake.bearer_token = TOKEN
    dep = _dep(thread, extra=f"api_version: 2025-04-01-preview, azure_ad_token: '{TOKEN}'")
    up = AzureOpenAIUpstream(dep)
    try:
        await up.complete(Endpoint.CHAT, calls.chat())
    finally:
        await up.close()
    (seen,) = fake.seen
    assert seen.query == "api-version=2025-04-01-preview"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}" and "api-key" not in seen.headers


async def test_streams_arrive_intact_and_in_order(server: Served) -> None:
    _, thread = server
    up = AzureOpenAIUpstream(_dep(thread))
    try:
        chat = await calls.read(up, Endpoint.CHAT, calls.chat(stream=True))
        resp = await calls.read(up, Endpoint.RESPONSES, calls.responses(stream=True))
    finally:
        await up.close()
    frames = chat.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    chunks = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-2]]
    assert chunks[0]["choices"] == [] and "prompt_filter_results" in chunks[0]  # Azure's first
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    assert text == "hello there world"
    types = [
        orjson.loads(f.split(b"\ndata: ")[1])["type"] for f in resp.rstrip(b"\n").split(b"\n\n")
    ]
    assert types[0] == "response.created" and types[-1] == "response.completed"


@pytest.mark.parametrize("case", AZURE_OPENAI.cases, ids=str)
async def test_failure_modes(server: Served, case: failure_modes.Case) -> None:
    await failure_modes.check(AZURE_OPENAI, server[1].url, case)


@pytest.mark.parametrize("call", AZURE_OPENAI.calls)
async def test_a_dead_port(call: str) -> None:
    await failure_modes.check_unreachable(AZURE_OPENAI, call)


async def test_messages_are_not_an_azure_endpoint(server: Served) -> None:
    fake, thread = server
    await failure_modes.check_foreign_endpoint(AZURE_OPENAI, thread.url, fake.seen)


async def test_a_content_filter_refusal_reaches_the_client_with_its_code(server: Served) -> None:
    _, thread = server
    dep = _dep(thread, "filtered")
    up = AzureOpenAIUpstream(dep)
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.CHAT, calls.chat())
    finally:
        await up.close()
    err = as_api_error(raised.value, dep, Endpoint.CHAT, Redactor([]))
    assert (err.status, err.code, err.param) == (400, "content_filter", "prompt")
    assert "content management policy" in err.message


async def test_a_wrong_key_and_an_unknown_api_version(server: Served) -> None:
    fake, thread = server
    wrong = deployment(
        f"provider: azure_openai, base_url: '{thread.url}', model: gpt-4o-prod, "
        "api_key: wrong-key-0123456789"
    )
    old = _dep(thread, extra="api_version: 2022-01-01")
    failures = []
    for dep in (wrong, old):
        up = AzureOpenAIUpstream(dep)
        try:
            with pytest.raises(UpstreamFailure) as raised:
                await up.complete(Endpoint.CHAT, calls.chat())
        finally:
            await up.close()
        failures.append(raised.value)
    assert [f.status for f in failures] == [401, 404]
    assert orjson.loads(failures[0].body)["error"]["code"] == "401"
    assert orjson.loads(failures[1].body)["error"]["message"] == "Resource not found"
    assert fake.seen[0].headers["api-key"] == "wrong-key-0123456789"


@pytest.mark.parametrize(
    ("key", "path", "ok", "verdict"),
    [
        (API_KEY, "", True, "ok"),
        ("wrong-key-0123456789", "", False, "bad key"),
        (API_KEY, "/sub", False, "wrong base_url"),
    ],
)
async def test_probe(server: Served, key: str, path: str, ok: bool, verdict: str) -> None:
    fake, thread = server
    dep = deployment(
        f"provider: azure_openai, base_url: '{thread.url}{path}', model: gpt-4o-prod, "
        f"api_key: '{key}'"
    )
    up = AzureOpenAIUpstream(dep)
    try:
        result = await up.probe(2.0)
    finally:
        await up.close()
    assert (result.ok, result.verdict) == (ok, verdict), result.detail
    if not path:
        assert fake.seen[0].path == "/openai/v1/models" and fake.seen[0].headers["api-key"] == key


def test_through_a_gateway_only_the_deployments_key_reaches_azure(
    server: Served, make_gateway: GatewayFactory
) -> None:
    fake, thread = server
    gw = make_gateway(
        f"""
    models:
      gpt4o:
        deployments:
          - {{name: az, provider: azure_openai, base_url: '{thread.url}', model: gpt-4o,
              azure_deployment: gpt-4o-prod, api_key: '{API_KEY}'}}
    """
    )
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        headers={"authorization": f"Bearer {gw.tenant_key}", "api-key": "client-key-0123456789"},
        json={"model": "gpt4o", "messages": [{"role": "user", "content": "hi you"}]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "hi you"
    (seen,) = [s for s in fake.seen if s.method == "POST"]  # the rest are health probes
    assert seen.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    for each in fake.seen:
        assert each.headers["api-key"] == API_KEY and "authorization" not in each.headers
        assert gw.tenant_key not in str(each.headers) and gw.tenant_key.encode() not in each.raw
