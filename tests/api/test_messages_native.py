"""Both directions against the loopback Anthropic server: the anthropic SDK to
an Anthropic deployment (the same protocol both ends: bytes relayed, usage
and errors read), and the openai SDK's Chat Completions to it (translated)."""

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
from tests.support.anthropic_server import API_KEY, AnthropicServer
from tests.support.servers import ServerThread

CACHED_SYSTEM = [
    {
        "type": "text",
        "text": "You are a careful assistant with a long fixed preamble.",
        "cache_control": {"type": "ephemeral"},
    }
]


@pytest.fixture
def ant() -> Iterator[tuple[AnthropicServer, ServerThread]]:
    fake = AnthropicServer()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


@pytest.fixture
def gw(make_gateway: GatewayFactory, ant: tuple[AnthropicServer, ServerThread]) -> Gateway:
    url = ant[1].url

    def dep(name: str, model: str) -> str:
        return (
            f"{{name: {name}, provider: anthropic, base_url: '{url}', model: {model}, "
            f"api_key: '{API_KEY}'}}"
        )

    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
      sonnet: {{deployments: [{dep("ant", "claude-sonnet-4-5")}]}}
      thinker: {{deployments: [{dep("ant-thinking", "thinking")}]}}
      broken: {{deployments: [{dep("ant-stream-error", "stream-error")}]}}
      garbled: {{deployments: [{dep("ant-garbled", "garbled")}]}}
    """
    )


@pytest.fixture
def claude(gw: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.tenant_key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def oai(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
        yield sdk


def _settled(gw: Gateway) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pools = gw.services.traffic.pools.values()
        if not any(p.active or p.requests_in_flight for p in pools):
            return True
        time.sleep(0.02)
    return False


# -- Messages in, Messages upstream: passed through ------------------------------------


def test_messages_pass_through_untouched_and_metered_with_cache_tokens(
    gw: Gateway, claude: anthropic.Anthropic, ant: tuple[AnthropicServer, ServerThread]
) -> None:
    body: Any = {
        "max_tokens": 64,
        "system": CACHED_SYSTEM,
        "messages": [{"role": "user", "content": "four little words here"}],
    }
    first = claude.messages.create(model="sonnet", **body)
    again = claude.messages.create(model="sonnet", **body)
    assert first.content[0].text == "four little words here"  # type: ignore[union-attr]
    written = first.usage.cache_creation_input_tokens
    assert written and again.usage.cache_read_input_tokens == written
    sent = ant[0].seen[-1].body
    assert sent["system"] == CACHED_SYSTEM  # cache_control reaches Anthropic as sent
    assert sent["model"] == "claude-sonnet-4-5" and "stream_options" not in sent
    rows = gw.wait_rows(2)
    total = again.usage.input_tokens + written
    assert rows[-1]["prompt_tokens"] == total  # cache tokens counted as input
    assert rows[-1]["completion_tokens"] == again.usage.output_tokens


def test_messages_stream_passes_through(gw: Gateway, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="thinker", max_tokens=64, messages=[{"role": "user", "content": "deep thought"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "deep thought"
    assert [b.type for b in final.content] == ["thinking", "text"]
    row = gw.wait_rows(1)[-1]
    assert row["stream"] and not row["tokens_estimated"]
    assert row["completion_tokens"] == final.usage.output_tokens > 0
    assert _settled(gw)


def test_upstream_error_event_is_relayed_and_recorded(
    gw: Gateway, claude: anthropic.Anthropic
) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        claude.messages.stream(
            model="broken", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    row = gw.wait_rows(1)[-1]
    assert (row["status"], row["error_type"]) == (502, "upstream_stream_error")
    assert _settled(gw)


# -- Chat in, Messages upstream: translated ---------------------------------------------


def test_chat_to_anthropic(oai: openai.OpenAI, ant: tuple[AnthropicServer, ServerThread]) -> None:
    resp = oai.chat.completions.create(
        model="sonnet",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "three words please"},
        ],
        max_tokens=40,
        temperature=1.5,
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == "three words please"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    sent = ant[0].seen[-1].body
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["max_tokens"] == 40 and sent["temperature"] == 1.0  # Anthropic's range
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "three words please"}]}
    ]


def test_chat_tool_round_trip_through_anthropic(oai: openai.OpenAI) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    question: Any = {"role": "user", "content": "weather in Lima"}
    first = oai.chat.completions.create(model="sonnet", messages=[question], tools=tools)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "search"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"query": "weather in Lima"}  # type: ignore[union-attr]
    second = oai.chat.completions.create(
        model="sonnet",
        tools=tools,
        messages=[
            question,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny and warm"},
        ],
    )
    assert second.choices[0].message.content == "sunny and warm"


def test_chat_stream_from_anthropic_with_usage(gw: Gateway, oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="sonnet",
            messages=[{"role": "user", "content": "a streamed answer"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a streamed answer"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3
    assert _settled(gw)


def test_chat_stream_error_from_anthropic_is_chats_error_event(gw: Gateway) -> None:
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    body = {"model": "broken", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=30)
    frames = resp.text.strip().split("\n\n")
    assert frames[-1] == "data: [DONE]"
    error = orjson.loads(frames[-2][6:])["error"]
    assert error["code"] == "overloaded_error"
    assert _settled(gw)


def test_garbled_anthropic_answer_is_a_502_for_chat(gw: Gateway) -> None:
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    body = {"model": "garbled", "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=30)
    assert resp.status_code == 502, resp.text
    assert _settled(gw)
