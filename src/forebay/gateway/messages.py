"""Stage 2 for Anthropic Messages bodies (validate.py checks Chat's): the body
is checked and decoded to canonical in one walk, and the canonical form kept
for a deployment that speaks another protocol."""

from __future__ import annotations

from typing import Any

from forebay.gateway.metering import estimate_prompt_tokens
from forebay.gateway.validate import ROUTING_OVERRIDES, ParsedRequest
from forebay.protocols.anthropic_messages import decode_counted, decode_request
from forebay.protocols.canonical import GenRequest
from forebay.upstreams.base import Endpoint, WireProtocol


def parse_messages(obj: dict[str, Any]) -> ParsedRequest:
    for field in ROUTING_OVERRIDES.intersection(obj):
        del obj[field]
    canonical = decode_request(obj)
    return ParsedRequest(
        Endpoint.MESSAGES,
        obj,
        canonical.model,
        canonical.stream,
        include_usage=False,  # an Anthropic stream always reports usage
        protocol=WireProtocol.ANTHROPIC_MESSAGES,
        canonical=canonical,
    )


def count_tokens(obj: dict[str, Any]) -> tuple[GenRequest, int]:
    """(the canonical request, an estimate of the input tokens) of a
    count_tokens body: its messages, system prompt and tool definitions, at ~4
    characters a token."""
    canonical = decode_counted(obj)
    return canonical, max(1, estimate_prompt_tokens(obj))
