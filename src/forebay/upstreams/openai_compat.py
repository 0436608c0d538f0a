"""One adapter for every OpenAI-compatible server: vLLM, SGLang, llama.cpp,
Ollama, TGI, OpenAI itself, and the embedded local worker.

aiohttp is used (not httpx) because its C HTTP parser keeps the gateway's
per-request CPU cost low; connections are pooled and kept alive per deployment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from forebay.config.settings import Deployment
from forebay.errors import FailureKind, UpstreamFailure
from forebay.upstreams.base import Endpoint, UpstreamReply

_MAX_ERROR_BODY = 64 * 1024


class OpenAICompatUpstream:
    def __init__(
        self,
        deployment: Deployment,
        *,
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
        headers = {"content-type": "application/json", **dict(deployment.headers)}
        if deployment.api_key:
            headers["authorization"] = f"Bearer {deployment.api_key}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=deployment.connect_timeout_s, sock_read=deployment.timeout_s
        )

    def ready(self) -> bool:
        return self._ready()

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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, timeout_s: float) -> tuple[bool, str]:
        """GET {base_url}/models with this deployment's credentials: (healthy, why).
        Any answer but a server error, a refused credential or a 404 (usually a
        base_url without /v1) counts as healthy: the server is there and talks."""
        try:
            async with self._client().get(
                f"{self._base}/models", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError:
            return False, f"GET /models did not answer within {timeout_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            return False, f"cannot connect ({exc.os_error.strerror or type(exc).__name__})"
        except aiohttp.ClientError as exc:
            return False, f"GET /models failed ({type(exc).__name__})"
        said = f"GET /models answered HTTP {status}"
        if status in (401, 403):
            return False, f"{said}: the upstream refuses this deployment's api_key or headers"
        if status == 404:
            return False, f"{said}: does base_url lack its /v1?"
        if status >= 500:
            return False, said
        return True, said

    async def _post(self, endpoint: Endpoint, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        url = f"{self._base}/{endpoint.value}"
        try:
            return await self._client().post(url, data=orjson.dumps(payload))
        except TimeoutError:
            raise UpstreamFailure("timeout", "timed out connecting to the upstream") from None
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamFailure(
                self._down_kind, f"cannot connect to the upstream ({type(exc).__name__})"
            ) from None

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> UpstreamReply:
        resp = await self._post(endpoint, payload)
        try:
            body = await resp.read()
        except TimeoutError:
            raise UpstreamFailure("timeout", "the upstream did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(
                "protocol", f"the upstream broke the connection ({type(exc).__name__})"
            ) from None
        finally:
            resp.release()
        if resp.status >= 400:
            raise UpstreamFailure(
                "status",
                f"the upstream answered HTTP {resp.status}",
                status=resp.status,
                body=body[:_MAX_ERROR_BODY],
                retry_after=resp.headers.get("retry-after"),
            )
        return UpstreamReply(resp.status, body)

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> _Stream:
        resp = await self._post(endpoint, payload)
        if resp.status >= 400:
            try:
                body = await resp.content.read(_MAX_ERROR_BODY)
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                resp.release()
            raise UpstreamFailure(
                "status",
                f"the upstream answered HTTP {resp.status}",
                status=resp.status,
                body=body,
                retry_after=resp.headers.get("retry-after"),
            )
        return _Stream(resp)


class _Stream:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError:
            raise UpstreamFailure("timeout", "the upstream stream went idle too long") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(
                "protocol", f"the upstream stream broke ({type(exc).__name__})"
            ) from None

    def release(self) -> None:
        # A stream abandoned half-way must close its connection, or the
        # upstream keeps generating tokens nobody will read.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()
