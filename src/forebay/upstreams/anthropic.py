"""Anthropic's native Messages API: POST {base_url}/v1/messages (streamed as
SSE, relayed raw), POST /v1/messages/count_tokens, GET /v1/models for the probe;
the key in `x-api-key`, `anthropic-version` always, `anthropic-beta` when
configured.

Anthropic's failures, as the gateway must read them (gateway/failures.py):
529 overloaded_error is Anthropic short of capacity for everyone, not this
request's fault nor a broken deployment: "unavailable", tried again like a 503.
A 429 says how long to wait in `retry-after`, or else in the reset timestamps of
whichever `anthropic-ratelimit-*` limit is at zero; a 429 for a spent monthly
limit (`enforced_spend_limit_reached`, no retry-after) rests the deployment for
long. The rest keep their status: 400 invalid_request_error and 413 go back to
the client as the upstream's error, 401 / 403 / 500 are the deployment's and
tried elsewhere."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.upstreams.base import Endpoint, WireProtocol, token_count
from forebay.upstreams.http_base import HttpUpstream, status_failure, unsupported
from forebay.upstreams.probe import ProbeTarget
from forebay.upstreams.retry_hints import QUOTA_COOLDOWN_S, anthropic_reset, retry_after

SPEND_LIMIT = "enforced_spend_limit_reached"
# The body fields of count_tokens (Anthropic's API reference).
_COUNTED = frozenset(
    {
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
    }
)


class AnthropicUpstream(HttpUpstream):
    wire = frozenset({WireProtocol.ANTHROPIC_MESSAGES})

    def __init__(self, deployment: Deployment) -> None:
        headers = dict(deployment.headers)
        if deployment.api_key:
            headers["x-api-key"] = deployment.api_key
        headers["anthropic-version"] = deployment.anthropic_version
        if deployment.anthropic_beta:
            headers["anthropic-beta"] = ",".join(deployment.anthropic_beta)
        super().__init__(deployment, headers=headers)
        self._messages = f"{self._base}/v1/messages"

    def _url(self, endpoint: Endpoint) -> str:
        if endpoint is not Endpoint.MESSAGES:
            raise unsupported(self.deployment, endpoint)
        return self._messages

    async def count_tokens(self, payload: dict[str, Any]) -> int:
        """POST /v1/messages/count_tokens with a Messages body (its model this
        deployment's): `{"input_tokens": N}`, free of charge. Fields the endpoint
        does not take (max_tokens, stream, sampling) are left out, as it refuses them."""
        body = {k: v for k, v in payload.items() if k in _COUNTED}
        body["model"] = self.deployment.upstream_model
        reply = await self._exchange(f"{self._messages}/count_tokens", body)
        return token_count(reply, "input_tokens")

    def _probe_target(self) -> ProbeTarget:
        return ProbeTarget(
            f"{self._base}/v1/models?limit=1000",
            not_found_hint="its base_url should be the host alone, e.g. https://api.anthropic.com",
            dated_ids=True,  # "claude-sonnet-4-5" is served as claude-sonnet-4-5-20250929
        )

    def _failure(self, resp: aiohttp.ClientResponse, body: bytes) -> UpstreamFailure:
        kind, code = _error_kind(body)
        if resp.status == 529 or kind == "overloaded_error":
            detail = f"Anthropic is overloaded (HTTP {resp.status} overloaded_error)"
            return status_failure(resp, body, kind="unavailable", detail=detail)
        retry = None
        if resp.status == 429:
            retry = retry_after(resp.headers) or anthropic_reset(resp.headers)
            if retry is None and code == SPEND_LIMIT:
                retry = str(QUOTA_COOLDOWN_S)
        return status_failure(resp, body, retry=retry)


def _error_kind(body: bytes) -> tuple[str | None, str | None]:
    """The error's type and its details' error_code, from Anthropic's envelope
    `{"type": "error", "error": {"type", "message", "details"?}}`."""
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None, None
    if not isinstance(err, dict):
        return None, None
    details = err.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    kind = err.get("type")
    return (kind if isinstance(kind, str) else None), (code if isinstance(code, str) else None)
