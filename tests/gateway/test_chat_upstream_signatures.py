"""A signing reasoning model behind an OpenAI-compatible Chat endpoint (the test
server's `signed` model: Gemini's compatibility endpoint's thought_signature on
the first call, LiteLLM's thinking_blocks), driven through the real gateway by
the real openai (Responses) and anthropic (Messages) clients, whole and
streamed: the second turn reaches the upstream with the signatures where it
wants them, which the upstream checks as Gemini 3 does (a 400 without them)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support.signed_chat import BLOCKS, CALL_SIGNATURE, THINKING, THINKING_SIGNATURE

WEATHER: Any = {
    "type": "function",
    "name": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
GOOGLE = {"google": {"thought_signature": CALL_SIGNATURE}}


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
      signed:
        deployments: [{{name: fake-signed, base_url: "{upstream.base_url}", model: signed}}]
      garbled:
        deployments:
          - {{name: fake-garbled, base_url: "{upstream.base_url}", model: signed-garbled}}
    """
    )


def _second_turn_sent(upstream: Upstream) -> dict[str, Any]:
    """The assistant turn the upstream was sent back on the second request."""
    first, second = [s.body for s in upstream.fake.seen]
    assert not any(m["role"] == "assistant" for m in first["messages"])
    [msg] = [m for m in second["messages"] if m["role"] == "assistant"]
    return msg


@pytest.mark.parametrize("stream", [False, True])
def test_responses_client(gw: Gateway, upstream: Upstream, stream: bool) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
        ask: Any = [{"role": "user", "content": "Paris"}]
        if stream:
            with sdk.responses.stream(model="signed", input=ask, tools=[WEATHER]) as events:
                first = events.get_final_response()
        else:
            first = sdk.responses.create(model="signed", input=ask, tools=[WEATHER], store=False)
        reasoning = [o for o in first.output if o.type == "reasoning"]
        assert [r.encrypted_content for r in reasoning] == [THINKING_SIGNATURE, CALL_SIGNATURE]
        assert [s.text for s in reasoning[0].summary] == [THINKING]
        calls = [o for o in first.output if o.type == "function_call"]
        assert [c.call_id for c in calls] == ["function-call-1", "function-call-2"]
        items: Any = [*ask, *(o.model_dump(exclude_none=True) for o in first.output)]
        items += [
            {"type": "function_call_output", "call_id": c.call_id, "output": "6C"} for c in calls
        ]
        second = sdk.responses.create(model="signed", input=items, tools=[WEATHER], store=False)
    assert second.output_text == "the tool said 6C, 6C"  # the upstream accepted the turn
    msg = _second_turn_sent(upstream)
    assert msg["tool_calls"][0]["extra_content"] == GOOGLE
    assert "extra_content" not in msg["tool_calls"][1]
    assert msg["thinking_blocks"] == BLOCKS


@pytest.mark.parametrize("stream", [False, True])
def test_messages_client(gw: Gateway, upstream: Upstream, stream: bool) -> None:
    tool: Any = {"name": "weather", "input_schema": WEATHER["parameters"]}
    ask: Any = [{"role": "user", "content": "Paris"}]
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.tenant_key, max_retries=0) as sdk:
        if stream:
            with sdk.messages.stream(
                model="signed", max_tokens=256, messages=ask, tools=[tool]
            ) as events:
                first = events.get_final_message()
        else:
            first = sdk.messages.create(model="signed", max_tokens=256, messages=ask, tools=[tool])
        kinds = [b.type for b in first.content]
        assert kinds == ["thinking", "thinking", "tool_use", "tool_use"]
        thinking = [b for b in first.content if b.type == "thinking"]
        assert [(b.thinking, b.signature) for b in thinking] == [
            (THINKING, THINKING_SIGNATURE),
            ("", CALL_SIGNATURE),
        ]
        results: Any = [
            {"type": "tool_result", "tool_use_id": b.id, "content": "6C"}
            for b in first.content
            if b.type == "tool_use"
        ]
        content = [b.model_dump(exclude_none=True) for b in first.content]
        turn: Any = [*ask, {"role": "assistant", "content": content}]
        turn.append({"role": "user", "content": results})
        second = sdk.messages.create(model="signed", max_tokens=256, messages=turn, tools=[tool])
    assert second.content[0].type == "text"
    assert second.content[0].text == "the tool said 6C, 6C"
    msg = _second_turn_sent(upstream)
    assert msg["tool_calls"][0]["extra_content"] == GOOGLE
    assert "extra_content" not in msg["tool_calls"][1]
    assert msg["thinking_blocks"] == BLOCKS


def test_a_turn_sent_back_without_its_signature_is_the_upstreams_400(
    gw: Gateway, upstream: Upstream
) -> None:
    """What the upstream does without the signatures (the check above can fail)."""
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
        call = {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"}
        items: Any = [
            {"role": "user", "content": "Paris"},
            call,
            {"type": "function_call_output", "call_id": "c1", "output": "6C"},
        ]
        with pytest.raises(openai.BadRequestError) as err:
            sdk.responses.create(model="signed", input=items, tools=[WEATHER], store=False)
    assert "thought_signature" in str(err.value)


@pytest.mark.parametrize("stream", [False, True])
def test_hostile_signatures_from_the_upstream_are_dropped(gw: Gateway, stream: bool) -> None:
    """An object for a signature, a block signature over a MiB: the reply is
    served, readable reasoning and calls intact, with nothing to send back."""
    ask: Any = [{"role": "user", "content": "Paris"}]
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
        if stream:
            with sdk.responses.stream(model="garbled", input=ask, tools=[WEATHER]) as events:
                got = events.get_final_response()
        else:
            got = sdk.responses.create(model="garbled", input=ask, tools=[WEATHER], store=False)
    assert got.status == "completed"
    assert [o.type for o in got.output] == ["reasoning", "function_call", "function_call"]
    reasoning = got.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content is None
    assert [s.text for s in reasoning.summary] == [THINKING]
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.tenant_key, max_retries=0) as ant:
        tool: Any = {"name": "weather", "input_schema": WEATHER["parameters"]}
        msg = ant.messages.create(model="garbled", max_tokens=64, messages=ask, tools=[tool])
    assert [b.type for b in msg.content] == ["thinking", "tool_use", "tool_use"]


def test_openais_own_chat_api_is_sent_none_of_the_signature_fields(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # A Messages conversation carrying Anthropic's signed thinking, translated
    # to Chat: an OpenAI-compatible server gets the signature in thinking_blocks,
    # OpenAI's (and Azure's) own API, which neither signs nor documents the
    # field, gets the turn without it.
    from tests.support.openai_api_server import API_KEY, OpenAIServer
    from tests.support.servers import ServerThread

    fake = OpenAIServer()
    with ServerThread(fake.app()) as thread:
        gw = make_gateway(
            f"""
        models:
          own:
            deployments:
              - {{name: oai, provider: openai, base_url: "{thread.url}/v1",
                  model: details-20-5, api_key: "{API_KEY}"}}
          compat:
            deployments: [{{name: compat, base_url: "{upstream.base_url}", model: echo}}]
        """
        )
        history: Any = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": THINKING, "signature": THINKING_SIGNATURE},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ]
        tool: Any = {"name": "weather", "input_schema": {"type": "object"}}
        with anthropic.Anthropic(base_url=gw.url, api_key=gw.tenant_key, max_retries=0) as sdk:
            for model in ("own", "compat"):
                sdk.messages.create(model=model, max_tokens=16, messages=history, tools=[tool])
        [own] = [m for m in fake.seen[-1].body["messages"] if m["role"] == "assistant"]
        [compat] = [m for m in upstream.fake.seen[-1].body["messages"] if m["role"] == "assistant"]
        assert compat["thinking_blocks"][0]["signature"] == THINKING_SIGNATURE
        assert "thinking_blocks" not in own, own
        assert own["tool_calls"][0]["function"]["name"] == "weather"
        assert all("extra_content" not in c for c in own["tool_calls"])
