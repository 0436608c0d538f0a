"""The Anthropic adapter against a loopback server that speaks Messages as
Anthropic documents it: what it sends (path, headers, body), streams relayed
byte for byte, every failure an UpstreamFailure whose kind and retry hint the
gateway reads right, timeouts, a dead port, and the probe."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.gateway.failures import Retry, as_api_error, retry_rule
from forebay.gateway.redact import Redactor
from forebay.upstreams.anthropic import AnthropicUpstream
from forebay.upstreams.base import Endpoint
from forebay.upstreams.registry import remote_upstream
from tests.support.anthropic_server import API_KEY, AnthropicServer
from tests.support.deployments import deployment
from tests.support.servers import ServerThread, free_port

Served = tuple[AnthropicServer, ServerThread]
_FRAME = re.compile(rb"event: ([a-z_]+)\ndata: (\{.*\})")


@pytest.fixture
def server() -> Iterator[tuple[AnthropicServer, ServerThread]]:
    fake = AnthropicServer(event_gap_s=0.005)
    with ServerThread(fake.app()) as thread:
        yield fake, thread


def _dep(thread: ServerThread, extra: str = "", key: str = API_KEY) -> Deployment:
    return deployment(
        f"provider: anthropic, base_url: '{thread.url}', model: claude-sonnet-4-5, "
        f"api_key: '{key}'{', ' + extra if extra else ''}"
    )


def _payload(
    model: str = "claude-sonnet-4-5", text: str = "hello there world", **extra: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def _frames(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Every SSE frame, asserting the framing is exactly event + data + blank line."""
    assert data.endswith(b"\n\n")
    out = []
    for frame in data[:-2].split(b"\n\n"):
        match = _FRAME.fullmatch(frame)
        assert match, frame
        out.append((match.group(1).decode(), orjson.loads(match.group(2))))
    return out


async def _read(up: AnthropicUpstream, payload: dict[str, Any]) -> tuple[list[bytes], bytes]:
    stream = await up.open_stream(Endpoint.MESSAGES, payload)
    try:
        chunks = [c async for c in stream.chunks()]
    finally:
        stream.release()
    return chunks, b"".join(chunks)


async def test_sends_messages_with_the_deployments_headers_and_the_body_as_given(
    server: Served,
) -> None:
    fake, thread = server
    dep = _dep(thread, "anthropic_beta: [prompt-caching-2024-07-31, output-128k-2025-02-19]")
    up = remote_upstream(dep)
    assert isinstance(up, AnthropicUpstream)
    payload = _payload(system="be brief", temperature=0.2)
    try:
        reply = await up.complete(Endpoint.MESSAGES, payload)
    finally:
        await up.close()
    assert reply.status == 200
    message = orjson.loads(reply.body)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "hello there world"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == 5 and message["usage"]["output_tokens"] == 3
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.body == payload and seen.raw == orjson.dumps(payload)
    assert seen.headers["x-api-key"] == API_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "prompt-caching-2024-07-31,output-128k-2025-02-19"
    assert seen.headers["content-type"] == "application/json"
    assert "authorization" not in seen.headers


async def test_anthropic_version_is_configurable(server: Served) -> None:
    fake, thread = server
    up = AnthropicUpstream(_dep(thread, "anthropic_version: '2024-01-01'"))
    try:
        await up.complete(Endpoint.MESSAGES, _payload())
    finally:
        await up.close()
    assert fake.seen[0].headers["anthropic-version"] == "2024-01-01"
    assert "anthropic-beta" not in fake.seen[0].headers


async def test_a_stream_arrives_intact_and_in_order(server: Served) -> None:
    _, thread = server
    up = AnthropicUpstream(_dep(thread))
    try:
        chunks, data = await _read(up, _payload(text="one two three four", stream=True))
    finally:
        await up.close()
    assert len(chunks) > 1  # relayed as it came, not gathered into one
    frames = _frames(data)
    names = [n for n, _ in frames]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(d["type"] == n for n, d in frames)
    text = "".join(d["delta"]["text"] for n, d in frames if n == "content_block_delta")
    assert text == "one two three four"
    usage = frames[0][1]["message"]["usage"]
    assert usage["input_tokens"] == 4 and usage["cache_read_input_tokens"] == 0
    assert frames[-2][1]["usage"] == {"output_tokens": 4}


async def test_tool_use_and_thinking_blocks_stream_as_documented(server: Served) -> None:
    _, thread = server
    tools = [{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}]
    up = AnthropicUpstream(_dep(thread))
    try:
        _, data = await _read(up, _payload("thinking", "weather in Oslo", tools=tools, stream=True))
        reply = await up.complete(Endpoint.MESSAGES, _payload(text="weather in Oslo", tools=tools))
    finally:
        await up.close()
    frames = _frames(data)
    starts = [d["content_block"] for n, d in frames if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "tool_use"]
    assert starts[1]["name"] == "lookup" and starts[1]["input"] == {}
    deltas = [d["delta"] for n, d in frames if n == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"thinking_delta", "signature_delta", "input_json_delta"}
    args = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert orjson.loads(args) == {"query": "weather in Oslo"}
    assert frames[-2][1]["delta"]["stop_reason"] == "tool_use"
    message = orjson.loads(reply.body)
    assert message["stop_reason"] == "tool_use"
    assert message["content"][0]["type"] == "tool_use"


async def test_prompt_caching_usage_is_counted_outside_input_tokens(server: Served) -> None:
    _, thread = server
    system = [{"type": "text", "text": "a b c d e f g h", "cache_control": {"type": "ephemeral"}}]
    up = AnthropicUpstream(_dep(thread))
    try:
        first = orjson.loads((await up.complete(Endpoint.MESSAGES, _payload(system=system))).body)
        second = orjson.loads((await up.complete(Endpoint.MESSAGES, _payload(system=system))).body)
    finally:
        await up.close()
    assert first["usage"]["cache_creation_input_tokens"] == 8
    assert first["usage"]["cache_read_input_tokens"] == 0
    assert second["usage"]["cache_read_input_tokens"] == 8
    assert second["usage"]["cache_creation_input_tokens"] == 0
    assert first["usage"]["input_tokens"] == second["usage"]["input_tokens"] == 3


async def test_count_tokens(server: Served) -> None:
    fake, thread = server
    up = AnthropicUpstream(_dep(thread))
    try:
        # max_tokens and stream are a generation's: count_tokens refuses them, so
        # they are not sent; the model is the deployment's.
        tokens = await up.count_tokens(
            {
                "model": "alias",
                "max_tokens": 9,
                "stream": True,
                "messages": [{"role": "user", "content": "a b c"}],
            }
        )
    finally:
        await up.close()
    assert tokens == 3
    assert fake.seen[0].path == "/v1/messages/count_tokens"
    assert set(fake.seen[0].body) == {"model", "messages"}


@pytest.mark.parametrize(
    ("model", "status", "kind", "retry", "rule"),
    [
        ("rate-limited", 429, "status", "7", Retry.ELSEWHERE),
        ("spend-limit", 429, "status", "3600", Retry.ELSEWHERE),
        ("overloaded", 529, "unavailable", None, Retry.ANYWHERE),
        ("api-error", 500, "status", None, Retry.ELSEWHERE),
        ("forbidden", 403, "status", None, Retry.ELSEWHERE),
        ("invalid", 400, "status", None, Retry.NO),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_each_failure_has_its_kind_and_retry_hint(
    server: Served, model: str, status: int, kind: str, retry: str | None, rule: Retry, stream: bool
) -> None:
    _, thread = server
    up = AnthropicUpstream(_dep(thread))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            if stream:
                await up.open_stream(Endpoint.MESSAGES, _payload(model, stream=True))
            else:
                await up.complete(Endpoint.MESSAGES, _payload(model))
    finally:
        await up.close()
    failure = raised.value
    assert (failure.kind, failure.status, failure.retry_after) == (kind, status, retry)
    assert retry_rule(failure) is rule
    assert orjson.loads(failure.body)["type"] == "error"


async def test_a_rate_limit_without_retry_after_waits_for_the_spent_limits_reset(
    server: Served,
) -> None:
    _, thread = server
    up = AnthropicUpstream(_dep(thread))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.MESSAGES, _payload("rate-reset"))
    finally:
        await up.close()
    # The tokens limit (at 0) resets 30 s after the server answered; requests (49 left) do not.
    assert raised.value.retry_after is not None and 25 <= int(raised.value.retry_after) <= 30


async def test_an_invalid_request_goes_back_to_the_client_as_anthropic_said_it(
    server: Served,
) -> None:
    _, thread = server
    dep = _dep(thread)
    up = AnthropicUpstream(dep)
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.MESSAGES, _payload("invalid"))
    finally:
        await up.close()
    err = as_api_error(raised.value, dep, Endpoint.MESSAGES, Redactor([]))
    assert err.status == 400 and err.message == "messages.0.content: Field required"


async def test_a_wrong_key_is_the_deployments_fault(server: Served) -> None:
    _, thread = server
    up = AnthropicUpstream(_dep(thread, key="sk-ant-wrong-key-0123456789"))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.MESSAGES, _payload())
    finally:
        await up.close()
    assert raised.value.status == 401 and retry_rule(raised.value) is Retry.ELSEWHERE
    assert orjson.loads(raised.value.body)["error"]["type"] == "authentication_error"


async def test_the_server_refuses_a_request_without_anthropic_version(server: Served) -> None:
    _, thread = server
    async with aiohttp.ClientSession() as session:
        headers = {"x-api-key": API_KEY, "content-type": "application/json"}
        async with session.post(f"{thread.url}/v1/messages", data=b"{}", headers=headers) as resp:
            body = await resp.json()
    assert resp.status == 400
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }


async def test_a_mid_stream_error_event_is_relayed_as_it_came(server: Served) -> None:
    _, thread = server
    up = AnthropicUpstream(_dep(thread))
    try:
        _, data = await _read(up, _payload("stream-error", stream=True))
    finally:
        await up.close()
    frames = _frames(data)
    assert frames[0][0] == "message_start"
    assert frames[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )


async def test_a_garbled_body_is_returned_untranslated(server: Served) -> None:
    # The adapter does not judge bodies: the codec (protocols/) or the dispatcher does.
    _, thread = server
    up = AnthropicUpstream(_dep(thread))
    try:
        reply = await up.complete(Endpoint.MESSAGES, _payload("garbled"))
        _, streamed = await _read(up, _payload("garbled", stream=True))
    finally:
        await up.close()
    assert reply.status == 200 and reply.body == b"\x00\xff{not json at all"
    assert streamed.startswith(b"event: message_start\ndata: {not json 0\n\n")


async def test_a_dropped_connection_is_a_protocol_failure(server: Served) -> None:
    _, thread = server
    up = AnthropicUpstream(_dep(thread))
    got: list[bytes] = []
    try:
        with pytest.raises(UpstreamFailure) as whole:
            await up.complete(Endpoint.MESSAGES, _payload("drop"))
        stream = await up.open_stream(Endpoint.MESSAGES, _payload("drop", stream=True))
        try:
            with pytest.raises(UpstreamFailure) as streamed:
                async for chunk in stream.chunks():
                    got.append(chunk)
        finally:
            stream.release()
    finally:
        await up.close()
    assert whole.value.kind == "protocol" and streamed.value.kind == "protocol"
    assert [n for n, _ in _frames(b"".join(got))] == [
        "message_start",
        "content_block_start",
        "ping",
    ]


async def test_a_dead_port_cannot_connect() -> None:
    dep = deployment(
        f"provider: anthropic, base_url: 'http://127.0.0.1:{free_port()}', model: m, api_key: k"
    )
    up = AnthropicUpstream(dep)
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.MESSAGES, _payload())
    finally:
        await up.close()
    assert raised.value.kind == "connect" and retry_rule(raised.value) is Retry.ANYWHERE


@pytest.mark.parametrize("stream", [False, True])
async def test_a_slow_first_byte_times_out_at_the_deployments_timeout(
    server: Served, stream: bool
) -> None:
    _, thread = server
    up = AnthropicUpstream(_dep(thread, "timeout_s: 0.3"))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            if stream:
                await up.open_stream(Endpoint.MESSAGES, _payload("slow-3000", stream=True))
            else:
                await up.complete(Endpoint.MESSAGES, _payload("slow-3000"))
    finally:
        await up.close()
    assert raised.value.kind == "timeout"


async def test_other_endpoints_are_refused_without_a_request(server: Served) -> None:
    fake, thread = server
    up = AnthropicUpstream(_dep(thread))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(Endpoint.CHAT, _payload())
    finally:
        await up.close()
    assert raised.value.kind == "protocol" and fake.seen == []


@pytest.mark.parametrize(
    ("model", "key", "path", "ok", "verdict"),
    [
        ("claude-sonnet-4-5", API_KEY, "", True, "ok"),  # an alias of a dated id
        ("claude-haiku-4-5-20251001", API_KEY, "", True, "ok"),
        ("claude-opus-9", API_KEY, "", False, "model not served"),
        ("claude-sonnet-4-5", "sk-ant-wrong-0123456789", "", False, "bad key"),
        ("claude-sonnet-4-5", API_KEY, "/api", False, "wrong base_url"),
    ],
)
async def test_probe(
    server: Served, model: str, key: str, path: str, ok: bool, verdict: str
) -> None:
    fake, thread = server
    dep = deployment(
        f"provider: anthropic, base_url: '{thread.url}{path}', model: {model}, api_key: '{key}'"
    )
    up = AnthropicUpstream(dep)
    try:
        result = await up.probe(2.0)
    finally:
        await up.close()
    assert (result.ok, result.verdict) == (ok, verdict), result.detail
    if not path:  # a wrong path never reaches the Anthropic routes
        assert fake.seen[0].path == "/v1/models" and fake.seen[0].headers["x-api-key"] == key


async def test_probe_of_a_dead_port() -> None:
    dep = deployment(
        f"provider: anthropic, base_url: 'http://127.0.0.1:{free_port()}', model: m, api_key: k"
    )
    up = AnthropicUpstream(dep)
    try:
        result = await up.probe(1.0)
    finally:
        await up.close()
    assert (result.ok, result.verdict, result.healthy) == (False, "unreachable", False)
