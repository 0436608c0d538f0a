"""The OpenAI adapter against a loopback server of OpenAI's API: Chat
Completions and Responses (whole and streamed, bytes intact and in order), the
organization / project headers, 429 hints from retry-after, from the spent
limit's reset or for a spent quota, the other failures, timeouts, a dead port,
the probe; and, through a gateway, that only the deployment's key reaches it."""

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
from tests.support.servers import ServerThread, free_port

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


def _chat(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there world"}], **extra}


def _responses(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": "hello there world", **extra}


async def _read(up: OpenAIUpstream, endpoint: Endpoint, payload: dict[str, Any]) -> bytes:
    stream = await up.open_stream(endpoint, payload)
    try:
        return b"".join([c async for c in stream.chunks()])
    finally:
        stream.release()


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
        chat = await up.complete(Endpoint.CHAT, _chat())
        resp = await up.complete(Endpoint.RESPONSES, _responses(store=False))
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
    assert fake.seen[1].raw == orjson.dumps(_responses(store=False))


async def test_without_organization_no_such_header_is_sent(server: Served) -> None:
    fake, thread = server
    up = OpenAIUpstream(_dep(thread))
    try:
        await up.complete(Endpoint.CHAT, _chat())
    finally:
        await up.close()
    assert "openai-organization" not in fake.seen[0].headers
    assert "openai-project" not in fake.seen[0].headers


async def test_streams_arrive_intact_and_in_order(server: Served) -> None:
    _, thread = server
    up = OpenAIUpstream(_dep(thread))
    try:
        chat = await _read(
            up, Endpoint.CHAT, _chat(stream=True, stream_options={"include_usage": True})
        )
        resp = await _read(up, Endpoint.RESPONSES, _responses(stream=True))
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


@pytest.mark.parametrize(
    ("model", "status", "retry", "rule"),
    [
        ("rate-limited", 429, "7", Retry.ELSEWHERE),
        ("rate-reset", 429, "90", Retry.ELSEWHERE),  # the tokens limit is spent: 1m30s
        ("quota", 429, "3600", Retry.ELSEWHERE),
        ("server-error", 500, None, Retry.ELSEWHERE),
        ("overloaded", 503, None, Retry.ANYWHERE),
        ("invalid", 400, None, Retry.NO),
    ],
)
@pytest.mark.parametrize("endpoint", [Endpoint.CHAT, Endpoint.RESPONSES])
@pytest.mark.parametrize("stream", [False, True])
async def test_each_failure_has_its_kind_and_retry_hint(
    server: Served,
    model: str,
    status: int,
    retry: str | None,
    rule: Retry,
    endpoint: Endpoint,
    stream: bool,
) -> None:
    _, thread = server
    up = OpenAIUpstream(_dep(thread))
    payload = _chat(model) if endpoint is Endpoint.CHAT else _responses(model)
    try:
        with pytest.raises(UpstreamFailure) as raised:
            if stream:
                await up.open_stream(endpoint, {**payload, "stream": True})
            else:
                await up.complete(endpoint, payload)
    finally:
        await up.close()
    failure = raised.value
    assert (failure.kind, failure.status, failure.retry_after) == ("status", status, retry)
    assert retry_rule(failure) is rule
    assert "error" in orjson.loads(failure.body)


async def test_a_wrong_key(server: Served) -> None:
    _, thread = server
    up = OpenAIUpstream(_dep(thread, key="sk-wrong-0123456789abcdef"))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.RESPONSES, _responses())
    finally:
        await up.close()
    assert raised.value.status == 401 and retry_rule(raised.value) is Retry.ELSEWHERE


async def test_garbled_and_dropped_answers(server: Served) -> None:
    _, thread = server
    up = OpenAIUpstream(_dep(thread))
    try:
        garbled = await up.complete(Endpoint.RESPONSES, _responses("garbled"))
        with pytest.raises(UpstreamFailure) as dropped:
            await up.complete(Endpoint.CHAT, _chat("drop"))
        with pytest.raises(UpstreamFailure) as dropped_stream:
            await _read(up, Endpoint.RESPONSES, _responses("drop", stream=True))
    finally:
        await up.close()
    assert garbled.body.startswith(b"<html>")  # returned as it came; the codec judges it
    assert dropped.value.kind == "protocol" and dropped_stream.value.kind == "protocol"


async def test_a_dead_port_cannot_connect_nor_be_probed() -> None:
    dead = deployment(
        f"provider: openai, base_url: 'http://127.0.0.1:{free_port()}/v1', model: m, api_key: k"
    )
    up = OpenAIUpstream(dead)
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.CHAT, _chat())
        result = await up.probe(1.0)
    finally:
        await up.close()
    assert raised.value.kind == "connect"
    assert (result.ok, result.verdict) == (False, "unreachable")


@pytest.mark.parametrize("endpoint", [Endpoint.CHAT, Endpoint.RESPONSES])
async def test_a_slow_first_byte_times_out(server: Served, endpoint: Endpoint) -> None:
    _, thread = server
    up = OpenAIUpstream(_dep(thread, "timeout_s: 0.3"))
    payload = _chat("slow-3000") if endpoint is Endpoint.CHAT else _responses("slow-3000")
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.open_stream(endpoint, {**payload, "stream": True})
    finally:
        await up.close()
    assert raised.value.kind == "timeout"


async def test_messages_are_not_an_openai_endpoint(server: Served) -> None:
    fake, thread = server
    up = OpenAIUpstream(_dep(thread))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.MESSAGES, _chat())
    finally:
        await up.close()
    assert raised.value.kind == "protocol" and fake.seen == []


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
