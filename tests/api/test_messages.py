"""POST /v1/messages and /v1/messages/count_tokens, driven by the real
`anthropic` SDK through Forebay to OpenAI-compatible upstreams on loopback:
the Messages body is translated to Chat Completions and the answer back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from forebay.gateway.recorder import Exchange
from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support.openai_server import TOOLS_CACHED, TOOLS_REASONING
from tests.support.raw_upstream import RawUpstream

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
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
def gw(make_gateway: GatewayFactory, upstream: Upstream, raw: RawUpstream) -> Gateway:
    fake = upstream.base_url
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    server: {{max_body_bytes: 65536}}
    ledger: {{flush_interval_s: 0.05}}
    resilience: {{backoff_base_ms: 10, backoff_cap_ms: 50}}
    classes:
      realtime: {{priority: 0, ttft_slo_ms: 100, deadline_ms: 9000, max_queue_ms: 900,
                 hedge: true}}
      interactive: {{priority: 1, ttft_slo_ms: 2000, deadline_ms: 30000, max_queue_ms: 5000}}
    models:
      hedged:
        deployments:
          - {{name: slow, base_url: "{fake}", model: slow-1500, adaptive_concurrency: false}}
          - {{name: fast, base_url: "{fake}", model: echo, adaptive_concurrency: false}}
      echo:
        deployments:
          - {{name: fake-echo, base_url: "{fake}", model: echo,
             api_key: sk-upstream-secret-DO-NOT-LEAK}}
      claude:
        deployments:
          - {{name: fake-tools, base_url: "{fake}", model: tools}}
      down:
        deployments:
          - {{name: fake-down, base_url: "{fake}", model: fail-503}}
      mid:
        deployments:
          - {{name: fake-mid, base_url: "{fake}", model: mid-error}}
      raw:
        deployments:
          - {{name: dep-raw, base_url: "{raw.base_url}", model: ok, max_concurrency: 4,
             timeout_s: 2, adaptive_concurrency: false}}
      embed:
        kind: embedding
        deployments:
          - {{name: fake-embed, base_url: "{fake}", model: echo}}
    """
    )


@pytest.fixture
def client(gw: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.tenant_key, max_retries=0) as sdk:
        yield sdk


def _post(gw: Gateway, body: dict[str, Any], path: str = "/v1/messages") -> httpx.Response:
    headers = {"x-api-key": gw.tenant_key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{gw.url}{path}", json=body, headers=headers, timeout=30)


def _error(resp: httpx.Response, status: int, kind: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["request_id"] == resp.headers["x-request-id"]
    return str(body["error"]["message"])


def _busy(gw: Gateway) -> dict[str, dict[str, int]]:
    deadline = time.monotonic() + 10
    while True:
        busy = {
            alias: {"active": pool.active, "requests": pool.requests_in_flight}
            for alias, pool in gw.services.traffic.pools.items()
            if pool.active or pool.requests_in_flight or pool.retries_in_flight
        }
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.02)


# -- the SDK, happy paths ------------------------------------------------------------


def test_create_answers_in_messages_form_and_is_metered(
    gw: Gateway, client: anthropic.Anthropic, upstream: Upstream
) -> None:
    msg = client.messages.create(
        model="echo",
        max_tokens=50,
        system="You echo.",
        messages=[{"role": "user", "content": "hello there friend"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "hello there friend"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    # The fake counts 3 + the words of the last user message; 3 words out.
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (6, 3)
    sent = upstream.fake.seen[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"][0] == {"role": "system", "content": "You echo."}
    assert sent.body["max_tokens"] == 50
    row = gw.wait_rows(1)[-1]
    assert (row["endpoint"], row["prompt_tokens"], row["completion_tokens"]) == ("messages", 6, 3)
    assert row["status"] == 200 and not row["tokens_estimated"]


def test_stream_yields_the_text_and_final_usage(gw: Gateway, client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="echo", max_tokens=50, messages=[{"role": "user", "content": "one two three four"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three four"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 4)
    row = gw.wait_rows(1)[-1]
    assert (row["prompt_tokens"], row["completion_tokens"], row["stream"]) == (7, 4, True)
    assert _busy(gw) == {}


def test_tool_round_trip(client: anthropic.Anthropic, upstream: Upstream) -> None:
    question: Any = {"role": "user", "content": "Paris"}
    first = client.messages.create(
        model="claude",
        max_tokens=100,
        tools=[WEATHER],
        messages=[question],  # type: ignore[list-item]
    )
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "Paris"}
    # Anthropic counts cache reads outside input_tokens; the upstream's prompt
    # tokens (1 word + 10) include them.
    assert first.usage.cache_read_input_tokens == TOOLS_CACHED
    assert first.usage.input_tokens == 11 - TOOLS_CACHED
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}],
    }
    second = client.messages.create(
        model="claude",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[question, {"role": "assistant", "content": first.content}, result],
    )
    assert second.content[0].text == "the tool said sunny, 21 C"  # type: ignore[union-attr]
    assert second.stop_reason == "end_turn"
    sent = upstream.fake.seen[-1].body
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.id
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": "sunny, 21 C",
    }
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


def test_streamed_tool_call_arrives_whole(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Oslo"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = final.content[-1]
    assert call.type == "tool_use" and call.input == {"city": "Oslo"}
    assert final.usage.cache_read_input_tokens == TOOLS_CACHED
    assert final.usage.output_tokens == 5


def test_count_tokens_counts_system_and_tools(client: anthropic.Anthropic) -> None:
    messages: Any = [{"role": "user", "content": "How warm is it in Paris today?"}]
    bare = client.messages.count_tokens(model="echo", messages=messages).input_tokens
    full = client.messages.count_tokens(
        model="echo",
        messages=messages,
        system="You are a meteorologist who answers in one short sentence.",
        tools=[WEATHER],  # type: ignore[list-item]
    ).input_tokens
    assert 0 < bare < full


def test_bearer_auth_works_too(gw: Gateway) -> None:
    with anthropic.Anthropic(base_url=gw.url, auth_token=gw.tenant_key, max_retries=0) as sdk:
        msg = sdk.messages.create(
            model="echo", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert msg.content[0].text == "hi"  # type: ignore[union-attr]


def test_a_translated_request_hedges_and_gives_both_slots_back(gw: Gateway) -> None:
    body = {"model": "hedged", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": gw.tenant_key, "x-forebay-class": "realtime"}
    resp = httpx.post(f"{gw.url}/v1/messages", json=body, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"] == [{"type": "text", "text": "hi"}]
    assert "hedged after 100 ms: slow lost" in resp.headers["x-forebay-route"]
    assert _busy(gw) == {}


# -- errors as the SDK's typed exceptions ----------------------------------------------


def test_errors_are_the_sdks_typed_exceptions(gw: Gateway, client: anthropic.Anthropic) -> None:
    hi: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="nope", max_tokens=5, messages=hi)
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with (
        anthropic.Anthropic(base_url=gw.url, api_key="sk-fb-wrong", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError),
    ):
        bad.messages.create(model="echo", max_tokens=5, messages=hi)
    with pytest.raises(anthropic.BadRequestError) as br:
        client.messages.create(model="embed", max_tokens=5, messages=hi)
    assert br.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_an_overloaded_upstream_is_anthropics_529(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as err:
        client.messages.create(
            model="down", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 529
    assert err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert err.value.response.headers["retry-after"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "echo", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
         "role"),
        ({"model": "echo", "max_tokens": 5,
          "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, "video"),
        ({"model": "echo", "max_tokens": 5, "messages": "hi"}, "messages"),
        ({"model": "echo", "max_tokens": 5, "temperature": 1.5,
          "messages": [{"role": "user", "content": "hi"}]}, "temperature"),
        ({"model": "echo", "max_tokens": 5, "tool_choice": {"type": "sometimes"},
          "messages": [{"role": "user", "content": "hi"}]}, "tool_choice"),
    ],
)  # fmt: skip
def test_malformed_bodies_get_a_400_in_anthropics_envelope(
    gw: Gateway, body: dict[str, Any], says: str
) -> None:
    message = _error(_post(gw, body), 400, "invalid_request_error")
    assert says in message


def test_deeply_nested_tool_schema_is_refused(gw: Gateway) -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(200):
        schema = {"type": "object", "properties": {"x": schema}}
    tool = {"name": "deep", "input_schema": schema}
    body = {
        "model": "echo",
        "max_tokens": 5,
        "tools": [tool],
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert "deep" in _error(_post(gw, body), 400, "invalid_request_error")


def test_not_json_and_bad_version_are_400s(gw: Gateway) -> None:
    headers = {"x-api-key": gw.tenant_key, "content-type": "application/json"}
    resp = httpx.post(f"{gw.url}/v1/messages", content=b"{nope", headers=headers)
    _error(resp, 400, "invalid_request_error")
    body = {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(
        f"{gw.url}/v1/messages", json=body, headers={**headers, "anthropic-version": "latest"}
    )
    _error_no_id(resp, 400, "invalid_request_error")
    assert "anthropic-version" in resp.json()["error"]["message"]
    # Without the header at all: served (as 2023-06-01).
    resp = httpx.post(f"{gw.url}/v1/messages", json=body, headers={"x-api-key": gw.tenant_key})
    assert resp.status_code == 200, resp.text


def test_body_over_the_limit_is_request_too_large(gw: Gateway) -> None:
    body = {
        "model": "echo",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x" * 70_000}],
    }
    _error(_post(gw, body), 413, "request_too_large")


def test_missing_key_and_unknown_method_in_anthropics_envelope(gw: Gateway) -> None:
    resp = httpx.post(f"{gw.url}/v1/messages", json={})
    _error_no_id(resp, 401, "authentication_error")
    resp = httpx.get(f"{gw.url}/v1/messages", headers={"x-api-key": gw.tenant_key})
    _error_no_id(resp, 405, "invalid_request_error")


def _error_no_id(resp: httpx.Response, status: int, kind: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["type"] == kind


# -- failing upstreams ------------------------------------------------------------------


def _events(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in resp.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


def test_mid_stream_upstream_error_ends_with_anthropics_error_event(
    gw: Gateway, client: anthropic.Anthropic
) -> None:
    body = {
        "model": "mid",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d e"}],
    }
    events = _events(_post(gw, body))
    assert events[0][0] == "message_start"
    assert [e for e, _ in events if e == "content_block_delta"]  # the text before the error
    name, data = events[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["message"] == "the engine died mid-generation"
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model="mid", max_tokens=50, messages=[{"role": "user", "content": "a b c d e"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert _busy(gw) == {}
    rows = gw.wait_rows(2)
    assert all((r["status"], r["error_type"]) == (502, "upstream_stream_error") for r in rows)


@pytest.mark.parametrize("behaviour", ["sse-cut", "sse-bad-chunk"])
def test_stream_cut_by_the_upstream_ends_with_an_error_event(gw: Gateway, behaviour: str) -> None:
    body = {
        "model": "raw",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": f"as {behaviour}"}],
    }
    resp = _post(gw, body)
    assert resp.status_code == 200
    events = _events(resp)
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "api_error"
    assert "incomplete" in data["error"]["message"]
    assert _busy(gw) == {}


@pytest.mark.parametrize("behaviour", ["garbage", "not-json", "close-in-body", "hang-up"])
def test_garbled_upstream_answer_is_an_api_error(gw: Gateway, behaviour: str) -> None:
    body = {
        "model": "raw",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"as {behaviour}"}],
    }
    _error(_post(gw, body), 502, "api_error")
    assert _busy(gw) == {}
    ok = _post(gw, {**body, "messages": [{"role": "user", "content": "fine"}]})
    assert ok.status_code == 200 and ok.json()["content"][0]["text"] == "ok"


def test_secrets_are_redacted_from_translated_answers(gw: Gateway, raw: RawUpstream) -> None:
    secret = "sk-upstream-secret-DO-NOT-LEAK"
    body = {
        "model": "echo",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": f"my key is {secret}"}],
    }
    resp = _post(gw, body)
    assert resp.status_code == 200
    assert secret not in resp.text and "[redacted]" in resp.text
    streamed = _post(gw, {**body, "stream": True})
    assert secret not in streamed.text and "[redacted]" in streamed.text


# -- accounting --------------------------------------------------------------------


@pytest.fixture
def exchanges(gw: Gateway) -> list[Exchange]:
    """Every request's Exchange as the recorder is handed it."""
    seen: list[Exchange] = []
    recorder = gw.services.gateway._recorder
    finish = recorder.finish

    def keep(ex: Exchange) -> None:
        if ex not in seen:  # a stream calls finish again as it closes (a no-op)
            seen.append(ex)
        finish(ex)

    recorder.finish = keep  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("stream", [False, True])
def test_cache_and_reasoning_tokens_reach_the_record(
    gw: Gateway, exchanges: list[Exchange], stream: bool
) -> None:
    body = {
        "model": "claude",
        "max_tokens": 50,
        "stream": stream,
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "Rome"}],
    }
    assert _post(gw, body).status_code == 200
    chat = {
        "model": "claude",
        "stream": stream,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "messages": [{"role": "user", "content": "Rome"}],
    }
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    resp = httpx.post(f"{gw.base_url}/chat/completions", json=chat, headers=headers, timeout=30)
    assert resp.status_code == 200
    deadline = time.monotonic() + 10
    while len(exchanges) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    translated, passed = exchanges
    assert translated.protocol == "anthropic_messages" and passed.protocol == "openai_chat"
    for ex in (translated, passed):
        assert (ex.prompt_tokens, ex.completion_tokens) == (11, 5)
        assert (ex.cache_read_tokens, ex.cache_write_tokens) == (TOOLS_CACHED, 0)
        assert ex.reasoning_tokens == TOOLS_REASONING and not ex.estimated
