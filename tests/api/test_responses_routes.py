"""GET / DELETE /v1/responses/{id}, its input_items and cancel, driven by the
real openai client against a gateway whose store holds a response written as
another replica would write it (straight to the database)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from forebay.ledger.responses_table import Save
from forebay.protocols.canonical import GenReply, Stop, StopReason, TextPart, ToolCallPart, Usage
from forebay.protocols.openai_responses import CODEC
from forebay.protocols.openai_responses_items import decode_input
from forebay.protocols.openai_responses_reply import ResponseContext, echo_of
from forebay.protocols.openai_responses_state import record_of
from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config

REQUEST: dict[str, Any] = {
    "model": "echo",
    "instructions": "Be brief.",
    "input": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"type": "function_call", "call_id": "call_1", "name": "clock", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "12:00"},
        {"role": "user", "content": [{"type": "input_text", "text": "last"}]},
    ],
    "tools": [{"type": "function", "name": "clock", "parameters": {"type": "object"}}],
}
REPLY = GenReply(
    "up-1",
    "echo-upstream",
    [TextPart("It is noon."), ToolCallPart("call_2", "clock", '{"tz":"UTC"}')],
    StopReason(Stop.TOOL_CALLS),
    Usage(input_tokens=40, output_tokens=7, cache_read_tokens=32),
)


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(echo_config(upstream.base_url))


def seed(gw: Gateway, tenant: str = "default") -> dict[str, Any]:
    """One stored response of `tenant`, written to the database; its Response body."""
    found = gw.services.store.find_tenant(tenant)
    assert found is not None
    body = CODEC.encode_reply(REPLY, ResponseContext(model="echo", echo=echo_of(REQUEST)))
    store = gw.services.responses
    rec = record_of(
        body,
        tenant_id=found.id,
        input_items=decode_input(REQUEST["input"]),
        expires_at=store.expiry(body["created_at"]),
    )
    store.table.apply([Save(rec)])
    return body


def other_tenant_key(gw: Gateway) -> str:
    store = gw.services.store
    store.create_tenant("other")
    key = store.create_key("other").key
    gw.services.keyring.replace(store.active_principals())
    return key


def test_retrieve_returns_the_response_the_client_got(
    sdk: Callable[..., openai.OpenAI], gw: Gateway
) -> None:
    body = seed(gw)
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    got = client.responses.retrieve(body["id"])
    assert got.id == body["id"] and got.output_text == "It is noon."
    assert got.model_dump(exclude_unset=True) == body
    assert got.usage is not None and got.usage.input_tokens_details.cached_tokens == 32
    assert got.tools[0].type == "function" and got.instructions == "Be brief."


def test_input_items_pages_through_every_item(
    sdk: Callable[..., openai.OpenAI], gw: Gateway
) -> None:
    body = seed(gw)
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    page = client.responses.input_items.list(body["id"], limit=2)
    assert len(page.data) == 2 and page.has_more
    newest_first = list(client.responses.input_items.list(body["id"], limit=2))  # auto-paging
    assert [i.type for i in newest_first] == [
        "message", "function_call_output", "function_call", "message", "message",
    ]  # fmt: skip
    oldest_first = list(client.responses.input_items.list(body["id"], order="asc"))
    assert [i.id for i in oldest_first] == [i.id for i in reversed(newest_first)]
    first, answer, call, result = oldest_first[:4]
    assert first.type == "message" and first.role == "user" and first.content[0].text == "first"
    assert answer.type == "message" and answer.role == "assistant"
    assert call.type == "function_call" and (call.call_id, call.name) == ("call_1", "clock")
    assert result.type == "function_call_output" and result.output == "12:00"
    after = client.responses.input_items.list(body["id"], order="asc", after=first.id, limit=1)
    assert [i.id for i in after.data] == [answer.id]
    raw = httpx.get(
        f"{gw.base_url}/responses/{body['id']}/input_items",
        params={"limit": 1},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
    ).json()
    assert raw["object"] == "list" and raw["first_id"] == raw["last_id"] == newest_first[0].id


def test_delete_then_it_is_gone(sdk: Callable[..., openai.OpenAI], gw: Gateway) -> None:
    body = seed(gw)
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    raw = client.responses.with_raw_response.delete(body["id"])
    assert raw.http_response.json() == {
        "id": body["id"],
        "object": "response.deleted",
        "deleted": True,
    }
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(body["id"])
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(body["id"])
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(body["id"])


def test_cancel_refuses_a_response_that_was_not_in_the_background(
    sdk: Callable[..., openai.OpenAI], gw: Gateway
) -> None:
    body = seed(gw)
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.cancel(body["id"])
    assert "background=true" in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_does_not_exist")


def test_another_tenant_finds_nothing(sdk: Callable[..., openai.OpenAI], gw: Gateway) -> None:
    body = seed(gw)
    intruder = sdk(base_url=gw.base_url, api_key=other_tenant_key(gw))
    for attempt in (
        lambda: intruder.responses.retrieve(body["id"]),
        lambda: intruder.responses.input_items.list(body["id"]),
        lambda: intruder.responses.delete(body["id"]),
        lambda: intruder.responses.cancel(body["id"]),
    ):
        with pytest.raises(openai.NotFoundError) as err:  # not 403: ids leak nothing
            attempt()
        assert body["id"] in err.value.message
    owner = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    assert owner.responses.retrieve(body["id"]).id == body["id"]


def test_bad_queries_and_keys_are_refused(sdk: Callable[..., openai.OpenAI], gw: Gateway) -> None:
    body = seed(gw)
    url = f"{gw.base_url}/responses/{body['id']}"
    tenant = {"authorization": f"Bearer {gw.tenant_key}"}
    for params in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"order": "up"}):
        r = httpx.get(f"{url}/input_items", params=params, headers=tenant)
        assert r.status_code == 400 and r.json()["error"]["param"] in ("limit", "order")
    assert httpx.get(url, params={"stream": "true"}, headers=tenant).status_code == 400
    assert httpx.get(f"{gw.base_url}/responses/{'r' * 500}", headers=tenant).status_code == 404
    assert httpx.get(url).status_code == 401
    admin = httpx.get(url, headers={"authorization": f"Bearer {gw.admin_key}"})
    assert admin.status_code == 403
    assert httpx.post(url, headers=tenant).status_code == 405
