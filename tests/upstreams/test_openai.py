"""The OpenAI adapter against a loopback server of OpenAI's API: Chat
Completions and Responses (whole and streamed, bytes intact and in order), the
organization / project headers, a wrong key, the probe; and, through a gateway,
that only the deployment's key reaches it. The failures it shares with the
other adapters (429 hints from retry-after, from the spent limit's reset or for
a spent quota, overload, garbled and dropped answers, a mid-stream error,
timeouts, a dead port) are OPENAI's rows in failure_modes.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.gateway.failures import Retry, retry_rule
from forebay.upstreams.base import Endpoint, WireProtocol
from forebay.upstreams.openai import OpenAIUpstream
from forebay.upstreams.registry import remote_upstream
from tests.conftest import GatewayFactory
from tests.support.deployments import deployment
from tests.support.openai_api_server import API_KEY, OpenAIServer
from tests.support.servers import ServerThread
from tests.upstreams import calls, failure_modes
from tests.upstreams.failure_modes import OPENAI

Served = tuple[OpenAIServer, ServerThread]


@pytest.fixture
def server() -> Iterator[Served]:
    fake = OpenAIServer()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


def _dep(thread: ServerThread, extra: str = "", key: str = API_KEY) -> Deployment:
    more = f", {extra}" if extra else ""
    return deployment(
        f"provider: openai, base_url: '{thread.url}/v1', model: gpt-4o-mini, api_key: '{key}'{more}"
    )


def _events(data: bytes) -> list[dict[str, Any]]:
    """The Responses stream's events, checking each frame's `event:` names its data's type."""
    out = []
    for frame in data.rstrip(b"\n").split(b"\n\n"):
        head, _, body = frame.partition(b"\n")
        event = orjson.loads(body.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        out.append(event)
    return out


def test_it_speaks_chat_and_responses() -> None:
    assert OpenAIUpstream.wire == {WireProtocol.OPENAI_CHAT, WireProtocol.OPENAI_RESPONSES}


async def test_chat_and_responses_carry_the_key_organization_and_project(server: Served) -> None:
    fake, thread = server
    up = remote_upstream(_dep(thread, "organization: org-test123, project: proj_abc"))
    assert isinstance(up, OpenAIUpstream)
    try:
        chat = await up.complete(Endpoint.CHAT, calls.chat())
        resp = await up.complete(Endpoint.RESPONSES, calls.responses(store=False))
    finally:
        await up.close()
    assert orjson.loads(chat.body)["choices"][0]["message"]["content"] == "hello there world"
    response = orjson.loads(resp.body)
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "hello there world"
    assert [s.path for s in fake.seen] == ["/v1/chat/completions", "/v1/responses"]
    for seen in fake.seen:
        assert seen.headers["authorization"] == f"Bearer {API_KEY}"
        assert seen.headers["openai-organization"] == "org-test123"
        assert seen.headers["openai-project"] == "proj_abc"
    assert fake.seen[1].raw == orjson.dumps(calls.responses(store=False))


async def test_without_organization_no_such_header_is_sent(server: Served) -> None:
    fake, thread = server
    up = OpenAIUpstream(_dep(thread))
    try:
        await up.complete(Endpoint.CHAT, calls.chat())
    finally:
        await up.close()
    assert "openai-organization" not in fake.seen[0].headers
    assert "openai-project" not in fake.seen[0].headers


async def test_streams_arrive_intact_and_in_order(server: Served) -> None:
    _, thread = server
    up = OpenAIUpstream(_dep(thread))
    try:
        chat = await calls.read(
            up, Endpoint.CHAT, calls.chat(stream=True, stream_options={"include_usage": True})
        )
        resp = await calls.read(up, Endpoint.RESPONSES, calls.responses(stream=True))
    finally:
        await up.close()
    frames = chat.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    chunks = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "hello there world" and chunks[-1]["usage"]["completion_tokens"] == 3
    events = _events(resp)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "hello there world"


@pytest.mark.parametrize("case", OPENAI.cases, ids=str)
async def test_failure_modes(server: Served, case: failure_modes.Case) -> None:
    await failure_modes.check(OPENAI, server[1].url, case)


@pytest.mark.parametrize("call", OPENAI.calls)
async def test_a_dead_port_cannot_connect_nor_be_probed(call: str) -> None:
    await failure_modes.check_unreachable(OPENAI, call)


async def test_messages_are_not_an_openai_endpoint(server: Served) -> None:
    fake, thread = server
    await failure_modes.check_foreign_endpoint(OPENAI, thread.url, fake.seen)


async def test_a_wrong_key(server: Served) -> None:
    _, thread = server
    up = OpenAIUpstream(_dep(thread, key="sk-wrong-0123456789abcdef"))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.RESPONSES, calls.responses())
    finally:
        await up.close()
    assert raised.value.status == 401 and retry_rule(raised.value) is Retry.ELSEWHERE


@pytest.mark.parametrize(
    ("model", "key", "ok", "verdict"),
    [
        ("gpt-4o-mini", API_KEY, True, "ok"),
        ("gpt-9", API_KEY, False, "model not served"),
        ("gpt-4o-mini", "sk-wrong-0123456789abcdef", False, "bad key"),
    ],
)
async def test_probe(server: Served, model: str, key: str, ok: bool, verdict: str) -> None:
    fake, thread = server
    dep = deployment(
        f"provider: openai, base_url: '{thread.url}/v1', model: {model}, api_key: '{key}'"
    )
    up = OpenAIUpstream(dep)
    try:
        result = await up.probe(2.0)
    finally:
        await up.close()
    assert (result.ok, result.verdict) == (ok, verdict), result.detail
    assert fake.seen[0].path == "/v1/models"


def test_through_a_gateway_only_the_deployments_key_reaches_openai(
    server: Served, make_gateway: GatewayFactory
) -> None:
    fake, thread = server
    gw = make_gateway(
        f"""
    models:
      mini:
        deployments:
          - {{name: oai, provider: openai, base_url: '{thread.url}/v1', model: gpt-4o-mini,
              api_key: '{API_KEY}', organization: org-test123}}
    """
    )
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        headers={"authorization": f"Bearer {gw.tenant_key}", "openai-organization": "org-client"},
        json={"model": "mini", "messages": [{"role": "user", "content": "hi you"}]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "hi you"
    (seen,) = [s for s in fake.seen if s.method == "POST"]  # the rest are health probes
    assert seen.path == "/v1/chat/completions"
    for each in fake.seen:
        assert each.headers["authorization"] == f"Bearer {API_KEY}"
        assert each.headers["openai-organization"] == "org-test123"
        assert gw.tenant_key not in str(each.headers) and gw.tenant_key.encode() not in each.raw
