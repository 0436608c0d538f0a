"""Azure OpenAI: Chat Completions (and completions, embeddings) on the
deployment routes, {endpoint}/openai/deployments/{deployment}/{endpoint}
?api-version=..., and Responses on the v1 route, {endpoint}/openai/v1/responses,
which takes no api-version and names the deployment in the body's `model`.
The key goes in the `api-key` header, or a Microsoft Entra ID token in
`Authorization: Bearer`. Azure's 429s carry `retry-after-ms` and `retry-after`
(read by the shared retry hints); its error bodies are OpenAI's envelope with
Azure's own codes (DeploymentNotFound, content_filter, "429"), which the
gateway reads like any other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from forebay.config.settings import Deployment
from forebay.upstreams.base import Endpoint, UpstreamReply, WireProtocol
from forebay.upstreams.http_base import HttpUpstream, unsupported
from forebay.upstreams.probe import ProbeTarget
from forebay.upstreams.stream import HttpStream

_DEPLOYMENT_ROUTES = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS})


class AzureOpenAIUpstream(HttpUpstream):
    wire = frozenset({WireProtocol.OPENAI_CHAT, WireProtocol.OPENAI_RESPONSES})
    strict_chat = True

    def __init__(self, deployment: Deployment) -> None:
        headers = dict(deployment.headers)
        if deployment.api_key and deployment.azure_bearer:
            headers["authorization"] = f"Bearer {deployment.api_key}"
        elif deployment.api_key:
            headers["api-key"] = deployment.api_key
        super().__init__(deployment, headers=headers)
        self._name = deployment.azure_deployment or deployment.upstream_model
        query = urlencode({"api-version": deployment.api_version or ""})
        self._routes = {
            e: f"{self._base}/openai/deployments/{quote(self._name, safe='')}/{e.value}?{query}"
            for e in _DEPLOYMENT_ROUTES
        }
        self._routes[Endpoint.RESPONSES] = f"{self._base}/openai/v1/responses"

    def _url(self, endpoint: Endpoint) -> str:
        url = self._routes.get(endpoint)
        if url is None:
            raise unsupported(self.deployment, endpoint)
        return url

    def _probe_target(self) -> ProbeTarget:
        # The v1 list names the resource's base models, not its deployments.
        return ProbeTarget(
            f"{self._base}/openai/v1/models",
            not_found_hint="is its base_url the resource endpoint, https://NAME.openai.azure.com?",
            names_deployment=False,
        )

    def _named(self, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
        """The v1 route finds the deployment by the body's model."""
        if endpoint is Endpoint.RESPONSES and payload.get("model") != self._name:
            return {**payload, "model": self._name}
        return payload

    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamReply:
        return await self._exchange(self._url(endpoint), self._named(endpoint, payload), headers)

    async def open_stream(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> HttpStream:
        return await self._open(self._url(endpoint), self._named(endpoint, payload), headers)
