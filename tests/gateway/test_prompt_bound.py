"""The prompt bound a reservation is made of: every content part reserves at most
what it can cost on the deployment, parts of unknown type its context size."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from forebay.config.defaults import (
    DEFAULT_AUDIO_TOKENS_PER_MB,
    DEFAULT_IMAGE_TOKENS,
)
from forebay.config.load import load_settings
from forebay.config.settings import Deployment, ModelAlias, PartBounds
from forebay.gateway.limits import _upper_bounds
from forebay.gateway.metering import (
    TEMPLATE_TOKENS_PER_MESSAGE,
    TEMPLATE_TOKENS_PER_PART,
    TEMPLATE_TOKENS_PER_REQUEST,
    estimate_prompt_tokens,
    prompt_shape,
    prompt_token_bound,
)
from forebay.gateway.validate import ParsedRequest
from forebay.upstreams.base import Endpoint

BOUNDS = PartBounds(
    image_tokens=700, audio_tokens_per_mb=5000, file_tokens=9000, context_tokens=50_000
)
ONE_MESSAGE = TEMPLATE_TOKENS_PER_REQUEST + TEMPLATE_TOKENS_PER_MESSAGE
PART = TEMPLATE_TOKENS_PER_PART


def _user(*parts: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(parts)}]}


def _text(s: str) -> dict[str, str]:
    return {"type": "text", "text": s}


def test_plain_text_is_its_utf8_bytes_plus_the_template() -> None:
    body = {"messages": [{"role": "user", "content": "héllo 世界"}]}
    assert prompt_token_bound(body, BOUNDS) == len("héllo 世界".encode()) + ONE_MESSAGE
    # The same text as a text part costs the same.
    assert (
        prompt_token_bound(_user(_text("héllo 世界")), BOUNDS)
        == len("héllo 世界".encode()) + ONE_MESSAGE
    )


@pytest.mark.parametrize(
    ("part", "cost"),
    [  # cost: the part's bound on BOUNDS, with the template's markers for a media part
        (
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
            700 + PART,
        ),
        ({"type": "input_image", "image_url": "data:image/png;base64,AAAA"}, 700 + PART),
        ({"type": "image", "source": {"type": "base64", "data": "AAAA"}}, 700 + PART),
        ({"type": "file", "file": {"file_id": "file-abc"}}, 9000 + PART),
        ({"type": "input_file", "file_data": "data:application/pdf;base64,AAAA"}, 9000 + PART),
        ({"type": "document", "source": {"type": "base64", "data": "AAAA"}}, 9000 + PART),
        # Audio by reference: nothing says how long it is.
        ({"type": "input_audio", "input_audio": {"url": "https://x/a.mp3"}}, 50_000 + PART),
        ({"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}, 50_000),  # unknown
        ({"type": "audio_url", "audio_url": {"url": "https://x/a.wav"}}, 50_000),  # unknown
        ({"type": "hologram", "text": "x"}, 50_000),  # unknown, even if it carries text
        ({"text": "no type"}, 50_000),
    ],
)
def test_each_part_type_reserves_its_bound(part: dict[str, Any], cost: int) -> None:
    expected = len(b"look") + ONE_MESSAGE + cost
    assert prompt_token_bound(_user(_text("look"), part), BOUNDS) == expected


def test_inline_audio_reserves_by_its_size() -> None:
    data = base64.b64encode(b"\x00" * 300_000).decode()  # 400,000 base64 characters
    part = {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}
    assert prompt_token_bound(_user(part), BOUNDS) == ONE_MESSAGE + PART + 2000  # 0.4 MB x 5000
    # The default bound: MP3 at its lowest bitrate, at the highest published tokens per second.
    default = prompt_token_bound(_user(part))
    assert default == ONE_MESSAGE + PART + 0.4 * DEFAULT_AUDIO_TOKENS_PER_MB


def test_every_image_counts_and_defaults_come_from_the_config() -> None:
    body = _user(*[{"type": "image_url", "image_url": {"url": "u"}}] * 3)
    assert prompt_token_bound(body) == ONE_MESSAGE + 3 * (DEFAULT_IMAGE_TOKENS + PART)
    settings = load_settings(None)
    local = settings.models["local"].deployments[0].bounds
    assert local.context_tokens == settings.local.ctx == local.file_tokens


def test_tool_calls_and_structured_parts_count_as_their_json() -> None:
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": call}]}
    assert prompt_token_bound(body, BOUNDS) >= len('{"a": 1}') + ONE_MESSAGE
    anthropic = _user(
        {"type": "tool_use", "id": "t", "name": "lookup", "input": {"q": "x" * 100}},
        {
            "type": "tool_result",
            "tool_use_id": "t",
            "content": [_text("y" * 50), {"type": "image"}],
        },
    )
    # The image inside a tool result is an image, not its JSON.
    assert prompt_token_bound(anthropic, BOUNDS) >= 150 + 700 + ONE_MESSAGE
    assert prompt_token_bound(anthropic, BOUNDS) < 150 + 700 + ONE_MESSAGE + 200


def test_responses_and_anthropic_top_level_fields() -> None:
    body = {
        "instructions": "be brief",
        "input": [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image"}],
            },
            {"type": "function_call_output", "call_id": "c", "output": "42"},
            {"type": "item_reference", "id": "msg_1"},  # stored elsewhere: any size
        ],
    }
    shape = prompt_shape(body)
    assert shape.images == 1 and shape.unknown == 1 and shape.text_bytes >= len("be briefhi42")
    anthropic = {"system": [_text("rules")], "messages": [{"role": "user", "content": "q"}]}
    assert prompt_token_bound(anthropic, BOUNDS) == len("rules") + 1 + ONE_MESSAGE


def test_token_id_prompts_and_embeddings_inputs() -> None:
    assert prompt_token_bound({"prompt": [[1, 2, 3], [4]]}) == 4 + TEMPLATE_TOKENS_PER_REQUEST
    assert prompt_token_bound({"input": ["ab", "cde"]}) == 5 + TEMPLATE_TOKENS_PER_REQUEST


def test_a_value_too_deep_to_measure_reserves_the_context() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    body = {"messages": [{"role": "user", "content": "hi", "name": deep}]}
    assert prompt_token_bound(body, BOUNDS) >= 50_000


def test_the_estimate_stays_a_typical_count() -> None:
    # The ledger's estimate (when the upstream reports none) is text only, about 4 chars a token.
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": "x" * 40}]}) == 10


def _deployment(name: str, usd_per_m: float, image_tokens: int) -> Deployment:
    return Deployment(
        name=name,
        alias="m",
        provider="openai_compat",
        base_url="http://127.0.0.1:9/v1",
        upstream_model="m",
        api_key=None,
        usd_per_input_token=usd_per_m / 1e6,
        usd_per_output_token=usd_per_m / 1e6,
        joules_per_input_token=0,
        joules_per_output_token=0,
        timeout_s=1,
        connect_timeout_s=1,
        max_connections=1,
        headers=(),
        bounds=replace(PartBounds(), image_tokens=image_tokens),
    )


def test_the_reservation_is_the_most_any_deployment_could_cost() -> None:
    # A cheap deployment that counts images dearly, and a dear one that counts them cheaply:
    # the $ bound is the larger of their costs, each with its own image bound.
    cheap, dear = _deployment("cheap", 1.0, 100_000), _deployment("dear", 10.0, 1_000)
    alias = ModelAlias("m", "chat", "", (cheap, dear))
    payload = _user({"type": "image_url", "image_url": {"url": "u"}})
    req = ParsedRequest(Endpoint.CHAT, payload, "m", False, False)
    tokens, usd = _upper_bounds(req, alias, 10, hedged=False)
    prompt_cheap = prompt_token_bound(payload, cheap.bounds)
    prompt_dear = prompt_token_bound(payload, dear.bounds)
    assert tokens == max(prompt_cheap, prompt_dear) + 10
    assert usd == pytest.approx(max((prompt_cheap + 10) * 1e-6, (prompt_dear + 10) * 1e-5))
    # A request that may be hedged pays for the losing try's prompt too.
    _, hedged = _upper_bounds(req, alias, 10, hedged=True)
    assert hedged == pytest.approx(
        max((2 * prompt_cheap + 10) * 1e-6, (2 * prompt_dear + 10) * 1e-5)
    )


def test_tools_and_response_format_count_in_any_body() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"q": "é" * 50}}}]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    assert prompt_token_bound(body, BOUNDS) >= 1 + 100 + ONE_MESSAGE  # 50 two-byte characters
