"""POST /v1/messages accepts what Anthropic's API reference accepts, and
refuses what it refuses with a 400 in Anthropic's envelope that names the
field. Valid requests are sent by the real anthropic SDK, translated to an
OpenAI-compatible upstream (`echo`) or passed untouched to an Anthropic one
(`claude`); invalid ones are sent raw, as the SDK's types would not let them."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config
from tests.support.anthropic_server import API_KEY, AnthropicServer
from tests.support.servers import ServerThread

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Any:
    fake = AnthropicServer()
    with ServerThread(fake.app()) as thread:
        claude = f"""
      claude:
        deployments:
          - {{name: d-claude, provider: anthropic, base_url: "{thread.url}",
             model: claude-sonnet-4-5, api_key: "{API_KEY}"}}
    """
        yield make_gateway(echo_config(upstream.base_url) + claude)


def _client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=gw.tenant_key, base_url=gw.url, max_retries=0)


VALID: list[tuple[str, dict[str, Any]]] = [
    ("system as a string", {"system": "Be brief."}),
    ("system as text blocks", {"system": [{"type": "text", "text": "Be brief."}]}),
    (
        "system with cache_control",
        {"system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]},
    ),
    (
        "content as blocks",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    ),
    ("stop_sequences", {"stop_sequences": ["\n\nHuman:", "END"]}),
    ("metadata.user_id", {"metadata": {"user_id": "u-123"}}),
    ("metadata.user_id null", {"metadata": {"user_id": None}}),
    ("tool_choice auto", {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ("tool_choice any", {"tool_choice": {"type": "any"}}),
    ("tool_choice tool", {"tool_choice": {"type": "tool", "name": "get_weather"}}),
    ("tool_choice none", {"tool_choice": {"type": "none"}}),
    (
        "thinking enabled",
        {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048},
    ),
    ("thinking disabled", {"thinking": {"type": "disabled"}}),
    ("service_tier auto", {"service_tier": "auto"}),
    ("service_tier standard_only", {"service_tier": "standard_only"}),
    ("temperature 0 and 1 edges", {"temperature": 1, "top_p": 0, "top_k": 0}),
    ("max_tokens 1", {"max_tokens": 1}),
    ("a whole-number float max_tokens", {"max_tokens": 16.0}),
    (
        "image base64",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "text", "text": "what is this?"},
                    ],
                }
            ]
        },
    ),
    (
        "image url",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/a.png"},
                        },
                    ],
                }
            ]
        },
    ),
    (
        "document text",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "text",
                                "media_type": "text/plain",
                                "data": "a note",
                            },
                        },
                        {"type": "text", "text": "summarise"},
                    ],
                }
            ]
        },
    ),
]
WEATHER = {
    "name": "get_weather",
    "description": "Weather by city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("model", ["echo", "claude"])
@pytest.mark.parametrize(("case", "fields"), VALID, ids=[c for c, _ in VALID])
def test_spec_valid_requests_are_accepted(
    gw: Gateway, model: str, case: str, fields: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"max_tokens": 32, "messages": USER, **fields}
    if "tool_choice" in fields:
        body["tools"] = [WEATHER]
    required = {k: body.pop(k) for k in ("max_tokens", "messages")}
    # Typed arguments where this SDK version has them, else sent as they are.
    try:
        reply = _client(gw).messages.create(model=model, **required, **body)
    except TypeError:
        reply = _client(gw).messages.create(model=model, **required, extra_body=body)
    assert reply.type == "message" and reply.role == "assistant", case


@pytest.mark.parametrize("model", ["echo", "claude"])
def test_count_tokens_takes_the_same_body_without_max_tokens(gw: Gateway, model: str) -> None:
    counted = _client(gw).messages.count_tokens(
        model=model,
        system=[{"type": "text", "text": "Be brief."}],
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    assert counted.input_tokens > 0


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "lots"}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),  # system is allowed
    ({"system": [{"type": "image"}]}, "system"),
    ({"system": 5}, "system"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stop_sequences": [1]}, "stop_sequences"),
    ({"metadata": "u-1"}, "metadata"),
    ({"metadata": {"user_id": 7}}, "metadata.user_id"),
    ({"metadata": {"user_id": "u" * 257}}, "metadata.user_id"),
    ({"tool_choice": {"type": "required"}}, "tool_choice"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"temperature": 1.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}]},
        "messages.0.content.0",
    ),
    ({"model": ""}, "model"),
]


@pytest.mark.parametrize(("fields", "named"), INVALID, ids=[n for _, n in INVALID])
def test_spec_invalid_requests_are_a_400_naming_the_field(
    gw: Gateway, fields: dict[str, Any], named: str
) -> None:
    body = {"model": "echo", "max_tokens": 32, "messages": USER, **fields}
    resp = httpx.post(
        f"{gw.url}/v1/messages",
        json=body,
        headers={"x-api-key": gw.tenant_key, "anthropic-version": "2023-06-01"},
    )
    assert resp.status_code == 400, resp.text
    envelope = resp.json()
    assert envelope["type"] == "error" and envelope["error"]["type"] == "invalid_request_error"
    assert named in envelope["error"]["message"], envelope
    assert envelope["request_id"] == resp.headers["x-request-id"]


@pytest.mark.parametrize(
    "fields",
    [
        {"container": "container_011CQ"},
        {"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}]},
    ],
)
def test_what_only_anthropic_can_act_on_is_passed_to_it_and_refused_for_translation(
    gw: Gateway, fields: dict[str, Any]
) -> None:
    client = _client(gw)
    reply = client.messages.create(model="claude", max_tokens=16, messages=USER, extra_body=fields)  # type: ignore[arg-type]
    assert reply.type == "message"
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="echo", max_tokens=16, messages=USER, extra_body=fields)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict)
    message = body["error"]["message"]
    assert next(iter(fields)) in message and "natively" in message
