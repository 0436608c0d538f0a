"""The transport every HTTP adapter shares: a pooled aiohttp session per
deployment, one POST per call, every transport error an `UpstreamFailure`, and
an error status turned into one by the adapter's own `_failure` (providers say
"retry later" and "your request is wrong" differently). An adapter says where
each endpoint lives (`_url`), which headers carry its credentials, and how its
errors read; the bytes it is sent and returns are never translated here.

aiohttp is used (not httpx) because its C HTTP parser keeps the gateway's
per-request CPU cost low; connections are pooled and kept alive per deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson

from forebay.config.settings import Deployment
from forebay.errors import FailureKind, UpstreamFailure
from forebay.upstreams.base import Endpoint, UpstreamReply, WireProtocol
from forebay.upstreams.passed_headers import for_upstream
from forebay.upstreams.probe import ProbeResult, ProbeTarget, probe
from forebay.upstreams.retry_hints import retry_after
from forebay.upstreams.stream import HttpStream
from forebay.upstreams.transport import TRANSPORT_ERRORS, transport_failure

MAX_ERROR_BODY = 64 * 1024


class HttpUpstream:
    wire: frozenset[WireProtocol]  # each adapter says which protocols it speaks natively
    strict_chat = False

    def __init__(
        self,
        deployment: Deployment,
        *,
        headers: Mapping[str, str],
        base_url: str | None = None,
        ready: Callable[[], bool] | None = None,
        supervised: bool = False,
    ) -> None:
        self.deployment = deployment
        # A supervised (local worker) upstream that cannot be reached is being
        # restarted: that is "unavailable, retry shortly" (503), not a bad gateway.
        self._down_kind: FailureKind = "unavailable" if supervised else "connect"
        url = base_url or deployment.base_url
        if not url:
            raise ValueError(f"deployment {deployment.name} has no base_url")
        self._base = url.rstrip("/")
        self.base_url = self._base
        self._ready = ready or (lambda: True)
        self._headers = {"content-type": "application/json", **headers}
        self._configured = frozenset(name.lower() for name in self._headers)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=deployment.connect_timeout_s, sock_read=deployment.timeout_s
        )

    # ------------------------------------------------------------ what adapters say

    def _url(self, endpoint: Endpoint) -> str:
        return f"{self._base}/{endpoint.value}"

    def _probe_target(self) -> ProbeTarget | None:
        return None  # {base_url}/models

    def _failure(self, resp: aiohttp.ClientResponse, body: bytes) -> UpstreamFailure:
        return status_failure(resp, body)

    # ------------------------------------------------------------ the Upstream interface

    def ready(self) -> bool:
        return self._ready()

    async def probe(self, timeout_s: float) -> ProbeResult:
        """GET the model list on this adapter's own pooled connections."""
        target = self._probe_target()
        session = self._client()
        return await probe(self.deployment, timeout_s=timeout_s, session=session, target=target)

    # `headers`: the caller's headers that may reach an upstream (passed_headers.py
    # picks those this adapter's protocols understand).
    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamReply:
        return await self._exchange(self._url(endpoint), payload, headers)

    async def open_stream(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> HttpStream:
        return await self._open(self._url(endpoint), payload, headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------ the transport

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.deployment.max_connections,
                keepalive_timeout=30,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def _post(
        self, url: str, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        data = orjson.dumps(payload)  # the body was checked to be encodable (validate.py)
        extra = for_upstream(headers, self.wire, self._configured) if headers else None
        try:
            return await self._client().post(url, data=data, headers=extra)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=False, down_kind=self._down_kind) from None

    async def _exchange(
        self, url: str, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamReply:
        """POST and read the whole answer."""
        resp = await self._post(url, payload, headers)
        try:
            body = await resp.read()
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=True) from None
        finally:
            resp.release()
        if resp.status >= 400:
            raise self._failure(resp, body[:MAX_ERROR_BODY])
        return UpstreamReply(resp.status, body)

    async def _open(
        self, url: str, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> HttpStream:
        """POST and hand back the stream once its status is known to be 2xx."""
        resp = await self._post(url, payload, headers)
        if resp.status >= 400:
            try:
                body = await resp.content.read(MAX_ERROR_BODY)
            except TRANSPORT_ERRORS:
                body = b""  # the status says enough
            finally:
                resp.release()
            raise self._failure(resp, body)
        return HttpStream(resp, self.deployment.timeout_s)


def status_failure(
    resp: aiohttp.ClientResponse,
    body: bytes,
    *,
    kind: FailureKind = "status",
    detail: str | None = None,
    retry: str | None = None,
) -> UpstreamFailure:
    """An error status as the gateway reads it (gateway/failures.py): `retry`
    overrides the hint of the standard retry headers."""
    return UpstreamFailure(
        kind,
        detail or f"the upstream answered HTTP {resp.status}",
        status=resp.status,
        body=body,
        retry_after=retry or retry_after(resp.headers),
    )


def unsupported(dep: Deployment, endpoint: Endpoint) -> UpstreamFailure:
    """A call this provider has no endpoint for: routing sent it to the wrong place."""
    return UpstreamFailure(
        "protocol", f"deployment {dep.name} ({dep.provider}) has no {endpoint.value} endpoint"
    )
