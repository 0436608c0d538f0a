"""Prefix affinity keys a prompt by what a server's KV cache holds first: a
Messages body's top-level `system` and a Responses body's `instructions` come
before the messages, so requests that share a user turn but not a system prompt
are not all sent to one deployment, and those that share both stay together."""

from __future__ import annotations

import anthropic
import pytest

from forebay.gateway.routing import prefix_key
from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.gateway.test_traffic import _gateway, _served_by

CHARS = 64


def _system(name: str) -> str:
    return f"You are {name}, an assistant with a long and particular system prompt. " * 20


def test_the_system_prompt_leads_the_key_in_every_form() -> None:
    turn = [{"role": "user", "content": "the same question"}]
    alpha = prefix_key({"system": "alpha " * 20, "messages": turn}, CHARS)
    bravo = prefix_key({"system": "bravo " * 20, "messages": turn}, CHARS)
    assert alpha != bravo and alpha.startswith(b"alpha")
    blocks = [{"type": "text", "text": "alpha " * 20}]
    as_blocks = prefix_key({"system": blocks, "messages": turn}, CHARS)
    assert as_blocks == prefix_key({"system": blocks, "messages": turn}, CHARS)
    assert as_blocks != prefix_key(
        {"system": [{"type": "text", "text": "b"}], "messages": turn}, CHARS
    )
    # Responses: instructions, then input as a string or as items.
    told = prefix_key({"instructions": "alpha " * 20, "input": "the same question"}, CHARS)
    assert told.startswith(b"alpha") and told != prefix_key(
        {"instructions": "bravo " * 20, "input": "the same question"}, CHARS
    )
    short = prefix_key({"instructions": "be brief", "input": "question"}, CHARS)
    assert short == b"be brief\x00question"
    items = prefix_key({"input": [{"role": "user", "content": "question"}]}, CHARS)
    assert items == b"question"
    # Chat Completions bodies are keyed as before: the messages in order.
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert prefix_key({"messages": chat}, CHARS) == b"sys\x00hi"


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return _gateway(
        make_gateway, upstream, "prefix_affinity", "a=echo", "b=echo", "c=echo", "d=echo"
    )


def test_messages_with_one_user_turn_and_different_system_prompts_spread_out(gw: Gateway) -> None:
    client = anthropic.Anthropic(api_key=gw.tenant_key, base_url=gw.url, max_retries=0)
    served: dict[str, set[str]] = {}
    for name in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot"):
        for _ in range(3):
            raw = client.messages.with_raw_response.create(
                model="m",
                max_tokens=16,
                system=_system(name),
                messages=[{"role": "user", "content": "the same question for everyone"}],
            )
            served.setdefault(name, set()).add(_served_by(raw.http_response))  # type: ignore[arg-type]
    assert all(len(names) == 1 for names in served.values()), served
    assert len(set().union(*served.values())) >= 2, served
