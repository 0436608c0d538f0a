"""Anthropic's count_tokens, answered by the alias's own provider when it has a
counting endpoint (Anthropic count_tokens, Gemini countTokens, Bedrock
CountTokens), else estimated.

The prompt is sent as generation would send it (translated to the upstream's
protocol by its codec), to the first available deployment of the alias that
can count; an alias with none, a deployment that fails or a body that cannot
cross to its protocol gets the estimate (~4 characters a token) instead, and
`x-forebay-token-count` says which of the two the caller got. A count is free
at every provider and generates nothing, so it takes no admission slot and is
not retried elsewhere: a failed count costs one round trip, then the estimate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

from forebay.errors import ForebayError, UpstreamFailure
from forebay.gateway.health import DeploymentState
from forebay.gateway.translate import encode_for, translation
from forebay.protocols.canonical import GenRequest
from forebay.upstreams.base import Endpoint, TokenCounter, WireProtocol

log = logging.getLogger("forebay")

HEADER = "x-forebay-token-count"
MESSAGES = WireProtocol.ANTHROPIC_MESSAGES
# A count is a small call: it should not hold the caller as long as a generation may.
COUNT_TIMEOUT_S = 10.0


async def count_input_tokens(
    states: Sequence[DeploymentState], body: dict[str, Any], canonical: GenRequest, estimate: int
) -> tuple[int, str]:
    """(the count, "upstream" or "estimate") for a count_tokens `body`."""
    now = time.monotonic()
    for state in states:
        upstream = state.upstream
        if not hasattr(upstream, "count_tokens") or not state.available(now):
            continue
        counter = cast(TokenCounter, upstream)
        dep = upstream.deployment
        try:
            if MESSAGES in upstream.wire:
                payload = body  # the adapter keeps the fields count_tokens takes
            else:
                plan = translation(MESSAGES, Endpoint.MESSAGES, upstream.wire)
                payload = encode_for(plan, canonical, dep.upstream_model)
            async with asyncio.timeout(min(COUNT_TIMEOUT_S, dep.timeout_s)):
                return await counter.count_tokens(payload), "upstream"
        except (UpstreamFailure, ForebayError, TimeoutError) as exc:
            why = getattr(exc, "detail", None) or getattr(exc, "message", None) or "timed out"
            log.info("count_tokens on %s failed (%s): answered with the estimate", dep.name, why)
            return estimate, "estimate"
    return estimate, "estimate"
