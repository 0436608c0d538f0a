"""OpenAI's own API: Chat Completions and Responses (and completions and
embeddings) at {base_url}/{endpoint}, a bearer key, and the optional
OpenAI-Organization / OpenAI-Project headers. Stored responses are Forebay's
own (the ledger database), so GET and DELETE /responses/{id} are never sent."""

from __future__ import annotations

import aiohttp
import orjson

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.upstreams.base import Endpoint, WireProtocol
from forebay.upstreams.http_base import HttpUpstream, status_failure, unsupported
from forebay.upstreams.retry_hints import QUOTA_COOLDOWN_S, openai_reset, retry_after
from forebay.upstreams.transport import request_headers

_ENDPOINTS = frozenset(
    {Endpoint.CHAT, Endpoint.RESPONSES, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS}
)


class OpenAIUpstream(HttpUpstream):
    wire = frozenset({WireProtocol.OPENAI_CHAT, WireProtocol.OPENAI_RESPONSES})
    strict_chat = True

    def __init__(self, deployment: Deployment) -> None:
        headers = request_headers(deployment)
        if deployment.organization:
            headers["openai-organization"] = deployment.organization
        if deployment.project:
            headers["openai-project"] = deployment.project
        super().__init__(deployment, headers=headers)

    def _url(self, endpoint: Endpoint) -> str:
        if endpoint not in _ENDPOINTS:
            raise unsupported(self.deployment, endpoint)
        return f"{self._base}/{endpoint.value}"

    def _failure(self, resp: aiohttp.ClientResponse, body: bytes) -> UpstreamFailure:
        retry = None
        if resp.status == 429:
            # A 429 without retry-after: the reset of whichever limit is spent,
            # and a long rest when it is the account's quota (billing), not a rate.
            retry = retry_after(resp.headers) or openai_reset(resp.headers)
            if retry is None and _error_code(body) == "insufficient_quota":
                retry = str(QUOTA_COOLDOWN_S)
        return status_failure(resp, body, retry=retry)


def _error_code(body: bytes) -> str | None:
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(err, dict):
        return None
    code = err.get("code") or err.get("type")
    return code if isinstance(code, str) else None
