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
from tests.support.azure_openai_server import API_KEY as AZURE_KEY
from tests.support.azure_openai_server import AzureServer
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
def azure() -> Iterator[tuple[AzureServer, ServerThread]]:
    fake = AzureServer()
    with ServerThread(fake.app()) as thread:
        yield fake, thread


@pytest.fixture
def gw(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    raw: RawUpstream,
    ant: tuple[AnthropicServer, ServerThread],
    oai_api: tuple[OpenAIServer, ServerThread],
    azure: tuple[AzureServer, ServerThread],
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
      azure:
        deployments:
          - {{name: az, provider: azure_openai, base_url: '{azure[1].url}', model: gpt-4o,
             azure_deployment: gpt-4o-prod, api_key: '{AZURE_KEY}'}}
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
            alias: {
                "active": p.active,
                "requests": p.requests_in_flight,
                "retries": p.retries_in_flight,
            }
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


def _text(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(c["text"] for c in content)


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


def test_items_input_and_a_function_tool_round_trip(
    gw: Gateway, client: openai.OpenAI, upstream: Upstream
) -> None:
    first = client.responses.create(
        model="tools",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Paris"}]}],
        tools=[WEATHER],  # type: ignore[list-item]
        store=False,
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert orjson.loads(calls[0].arguments) == {"city": "Paris"}
    assert first.usage is not None and first.usage.input_tokens_details.cached_tokens == 2
    sent = upstream.fake.seen[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    # The client sends the whole conversation back, with the tool's output.
    second = client.responses.create(
        model="tools",
        input=[
            {"role": "user", "content": "Paris"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": calls[0].name,
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        store=False,
    )
    assert second.output_text == "the tool said sunny, 21C"
    sent = upstream.fake.seen[-1].body
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": calls[0].call_id,
        "content": "sunny, 21C",
    }
    with pytest.raises(openai.NotFoundError):  # store: false kept nothing
        client.responses.retrieve(second.id)


def test_stream_sends_the_semantic_events_in_sequence(gw: Gateway, client: openai.OpenAI) -> None:
    with client.responses.stream(model="echo", input="one two three") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == "one two three"
    assert final.usage is not None and final.usage.output_tokens == 3
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert ids == {final.id}
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == "one two three" and stored.status == "completed"
    row = gw.wait_rows(1)[-1]
    assert row["protocol"] == "openai_responses" and row["completion_tokens"] == 3
    assert not row["tokens_estimated"]


def test_retrieve_and_delete(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="echo", input="keep me")
    assert client.responses.retrieve(resp.id).output_text == "keep me"
    client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)


def test_previous_response_id_continues_on_another_kind_of_upstream(
    gw: Gateway, client: openai.OpenAI, ant: tuple[AnthropicServer, ServerThread]
) -> None:
    first = client.responses.create(model="echo", instructions="Be kind.", input="alpha beta")
    assert first.output_text == "alpha beta"
    second = client.responses.create(
        model="claude", input="gamma", previous_response_id=first.id, max_output_tokens=64
    )
    assert second.output_text == "gamma" and second.previous_response_id == first.id
    sent = ant[0].seen[-1].body
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "alpha beta"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "alpha beta"}]},
        {"role": "user", "content": [{"type": "text", "text": "gamma"}]},
    ]
    assert "system" not in sent and sent["max_tokens"] == 64  # instructions not carried
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    rows = gw.wait_rows(2)
    assert {r["protocol"] for r in rows} == {"openai_responses"}
    assert [r["deployment"] for r in rows][-2:] == ["fake-echo", "ant"]


class Weather(BaseModel):
    city: str
    celsius: int


def test_structured_output_through_parse(client: openai.OpenAI, upstream: Upstream) -> None:
    parsed = client.responses.parse(
        model="echo", input='{"city": "Oslo", "celsius": -3}', text_format=Weather
    )
    assert parsed.output_parsed == Weather(city="Oslo", celsius=-3)
    fmt = upstream.fake.seen[-1].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["schema"]["required"] == ["city", "celsius"]


# -- an upstream that speaks Responses (OpenAI's own API) ------------------------------


def test_native_without_state_is_relayed_untouched(
    gw: Gateway, client: openai.OpenAI, oai_api: tuple[OpenAIServer, ServerThread]
) -> None:
    resp = client.responses.create(model="gpt", input="to the upstream", store=False)
    assert resp.id == "resp_test"  # the upstream's own Response, as it sent it
    assert resp.model == "gpt-4o-mini" and resp.output_text == "to the upstream"
    seen = oai_api[0].seen[-1]
    assert seen.path == "/v1/responses"
    assert seen.body == {"model": "gpt-4o-mini", "input": "to the upstream", "store": False}
    with client.responses.stream(model="gpt", input="a b", store=False) as stream:
        events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed" and events[-1].response.id == "resp_test"
    rows = gw.wait_rows(2)
    assert [(r["protocol"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        ("openai_responses", 6, 3),
        ("openai_responses", 5, 2),
    ]


def test_native_with_state_gets_the_whole_conversation_and_forebay_ids(
    client: openai.OpenAI, oai_api: tuple[OpenAIServer, ServerThread]
) -> None:
    first = client.responses.create(model="gpt", instructions="Short.", input="first words")
    assert first.id != "resp_test" and first.output_text == "first words"
    assert oai_api[0].seen[-1].body["store"] is False
    with client.responses.stream(
        model="gpt", input="second", previous_response_id=first.id
    ) as stream:
        events = list(stream)
        second = stream.get_final_response()
    assert second.id not in ("resp_test", first.id) and second.output_text == "second"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    sent = oai_api[0].seen[-1].body
    assert sent["store"] is False and "previous_response_id" not in sent
    assert "instructions" not in sent
    texts = [(i["role"], _text(i["content"])) for i in sent["input"]]
    assert texts == [("user", "first words"), ("assistant", "first words"), ("user", "second")]
    assert client.responses.retrieve(second.id).output_text == "second"


def test_azure_openai_serves_responses_natively(
    client: openai.OpenAI, azure: tuple[AzureServer, ServerThread]
) -> None:
    relayed = client.responses.create(model="azure", input="plain relay", store=False)
    assert relayed.id == "resp_test" and relayed.output_text == "plain relay"
    seen = azure[0].seen[-1]
    assert seen.path == "/openai/v1/responses" and seen.headers["api-key"] == AZURE_KEY
    assert seen.body == {"model": "gpt-4o-prod", "input": "plain relay", "store": False}
    with client.responses.stream(model="azure", input="kept turn") as stream:
        events = list(stream)
        kept = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kept.id != "resp_test" and kept.model == "azure"
    assert azure[0].seen[-1].body["store"] is False
    assert client.responses.retrieve(kept.id).output_text == "kept turn"


def test_a_hosted_tool_goes_to_a_native_upstream_only(
    gw: Gateway, client: openai.OpenAI, oai_api: tuple[OpenAIServer, ServerThread]
) -> None:
    resp = client.responses.create(
        model="gpt", input="news", tools=[{"type": "web_search_preview"}]
    )
    assert resp.output_text == "news"
    assert oai_api[0].seen[-1].body["tools"] == [{"type": "web_search_preview"}]
    # To a Chat-only alias an unforced hosted tool is dropped, and the answer says so
    dropped = client.responses.with_raw_response.create(
        model="echo", input="news", tools=[{"type": "web_search_preview"}]
    )
    assert dropped.headers["x-forebay-dropped-tools"] == "web_search_preview"
    assert dropped.parse().output_text == "news"
    # a forced one is refused.
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="echo",
            input="news",
            tools=[{"type": "web_search_preview"}],
            tool_choice={"type": "web_search_preview"},
        )
    assert "web_search" in str(err.value) and "natively" in str(err.value)
    assert _settled(gw) == {}


# -- abuse -----------------------------------------------------------------------------


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert isinstance(err, dict) and err["message"]
    return dict(err)


def test_an_unknown_previous_response_id_is_not_found(gw: Gateway) -> None:
    resp = _post(gw, {"model": "echo", "input": "hi", "previous_response_id": "resp_nope"})
    err = _error(resp, 404)
    assert err["code"] == "previous_response_not_found"
    assert err["param"] == "previous_response_id"
    row = gw.row_for(resp.headers["x-request-id"])
    assert (row["status"], row["protocol"]) == (404, "openai_responses")


def test_another_tenants_response_cannot_be_continued_nor_read(
    gw: Gateway, client: openai.OpenAI, upstream: Upstream
) -> None:
    mine = client.responses.create(model="echo", input="secret plans")
    store = gw.services.store
    store.create_tenant("other")
    key = store.create_key("other").key
    gw.services.keyring.replace(store.active_principals())
    sent = len(upstream.fake.seen)
    resp = _post(gw, {"model": "echo", "input": "go on", "previous_response_id": mine.id}, key)
    assert _error(resp, 404)["code"] == "previous_response_not_found"
    got = httpx.get(
        f"{gw.base_url}/responses/{mine.id}", headers={"authorization": f"Bearer {key}"}
    )
    assert got.status_code == 404
    assert len(upstream.fake.seen) == sent  # nothing reached an upstream


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "echo", "input": [{"type": "function_call_output"}]}, None),
        ({"model": "echo", "input": [{"role": "wizard", "content": "hi"}]}, None),
        ({"model": "echo", "input": 42}, "input"),
        ({"model": "echo", "input": "hi", "store": "yes"}, "store"),
        ({"model": "echo", "input": "hi", "max_output_tokens": 3}, "max_output_tokens"),
        ({"model": "echo", "input": "hi", "previous_response_id": 7}, "previous_response_id"),
        ({"input": "hi"}, "model"),
    ],
)
def test_malformed_bodies_are_a_clear_400(
    gw: Gateway, body: dict[str, Any], param: str | None
) -> None:
    err = _error(_post(gw, body), 400)
    if param is not None:
        assert err["param"] == param
    assert _settled(gw) == {}


def test_a_garbled_upstream_is_a_502_and_every_slot_comes_back(gw: Gateway) -> None:
    for body in (
        {"model": "raw", "input": "hi"},
        {"model": "gpt-garbled", "input": "hi"},
        {"model": "gpt-garbled", "input": "hi", "store": False},
    ):
        resp = _post(gw, body)
        assert resp.status_code == 502, resp.text
        assert resp.json()["error"]["type"] == "upstream_error"
    assert _settled(gw) == {}
    # Translated (stored): the garbage becomes the protocol's error event.
    stream = _post(gw, {"model": "gpt-garbled", "input": "hi", "stream": True})
    assert stream.status_code == 200
    events = _events(stream)
    assert [e["type"] for e in events] == ["error"], events
    assert "malformed" in events[0]["message"]
    assert gw.row_for(stream.headers["x-request-id"])["status"] == 502
    # Relayed (store: false): its first event is garbled, so the stream never
    # started (another deployment could have been tried): a 502, no garbage.
    body = {"model": "gpt-garbled", "input": "hi", "stream": True, "store": False}
    stream = _post(gw, body)
    assert stream.status_code == 502 and "{garbled" not in stream.text
    assert "not a JSON object" in stream.json()["error"]["message"]
    assert stream.json()["error"]["type"] == "upstream_error"
    assert gw.row_for(stream.headers["x-request-id"])["status"] == 502
    assert _settled(gw) == {}


@pytest.mark.parametrize("model", ["mid", "broken", "gpt-drop"])
def test_a_stream_that_fails_midway_ends_failed_and_gives_its_slot_back(
    gw: Gateway, client: openai.OpenAI, model: str
) -> None:
    resp = _post(gw, {"model": model, "input": "one two three four five", "stream": True})
    assert resp.status_code == 200
    events = _events(resp)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and "response.completed" not in kinds
    assert kinds[-2:] == ["error", "response.failed"], kinds
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert client.responses.retrieve(failed["id"]).status == "failed"
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["status"] in (502, 504) and row["protocol"] == "openai_responses"
    assert _settled(gw) == {}


# -- limits ----------------------------------------------------------------------------


def test_a_tenant_limit_caps_responses_by_max_output_tokens(
    gw: Gateway,
    admin: httpx.Client,
    upstream: Upstream,
    oai_api: tuple[OpenAIServer, ServerThread],
) -> None:
    resp = admin.put("/admin/limits/tenant/default", json={"tpm": 100_000})
    assert resp.status_code == 200, resp.text
    # Relayed untouched but for the cap, in Responses' own field (never max_tokens).
    assert _post(gw, {"model": "gpt", "input": "capped", "store": False}).status_code == 200
    sent = oai_api[0].seen[-1].body
    assert sent["max_output_tokens"] == 1024 and "max_tokens" not in sent
    # Translated: the decoded request carries the cap to the Chat upstream.
    assert _post(gw, {"model": "echo", "input": "capped"}).status_code == 200
    assert upstream.fake.seen[-1].body["max_tokens"] == 1024
    # The caller's own cap is the reservation, and is left as sent.
    body = {"model": "gpt", "input": "mine", "store": False, "max_output_tokens": 50}
    assert _post(gw, body).status_code == 200
    assert oai_api[0].seen[-1].body["max_output_tokens"] == 50
