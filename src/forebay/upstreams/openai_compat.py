"""One adapter for every OpenAI-compatible server: vLLM, SGLang, llama.cpp,
Ollama, TGI, OpenAI itself, and the embedded local worker.

aiohttp is used (not httpx) because its C HTTP parser keeps the gateway's
per-request CPU cost low; connections are pooled and kept alive per deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from forebay.config.settings import Deployment
from forebay.errors import FailureKind, UpstreamFailure
from forebay.upstreams.base import Endpoint, UpstreamReply, WireProtocol
from forebay.upstreams.probe import ProbeResult, probe
from forebay.upstreams.transport import TRANSPORT_ERRORS, request_headers, transport_failure

_MAX_ERROR_BODY = 64 * 1024


class OpenAICompatUpstream:
    wire: frozenset[WireProtocol] = frozenset({WireProtocol.OPENAI_CHAT})

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
        self._headers = {"content-type": "application/json", **request_headers(deployment)}
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

    async def probe(self, timeout_s: float) -> ProbeResult:
        """GET {base_url}/models on this adapter's own pooled connections."""
        return await probe(self.deployment, timeout_s=timeout_s, session=self._client())

    async def _post(self, endpoint: Endpoint, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        url = f"{self._base}/{endpoint.value}"
        data = orjson.dumps(payload)  # the body was checked to be encodable (validate.py)
        try:
            return await self._client().post(url, data=data)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=False, down_kind=self._down_kind) from None

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> UpstreamReply:
        resp = await self._post(endpoint, payload)
        try:
            body = await resp.read()
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=True) from None
        finally:
            resp.release()
        if resp.status >= 400:
            raise _status_failure(resp, body[:_MAX_ERROR_BODY])
        return UpstreamReply(resp.status, body)

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> _Stream:
        resp = await self._post(endpoint, payload)
        if resp.status >= 400:
            try:
                body = await resp.content.read(_MAX_ERROR_BODY)
            except TRANSPORT_ERRORS:
                body = b""  # the status says enough
            finally:
                resp.release()
            raise _status_failure(resp, body)
        return _Stream(resp, self.deployment.timeout_s)


def _status_failure(resp: aiohttp.ClientResponse, body: bytes) -> UpstreamFailure:
    return UpstreamFailure(
        "status",
        f"the upstream answered HTTP {resp.status}",
        status=resp.status,
        body=body,
        retry_after=resp.headers.get("retry-after"),
    )


class _Stream:
    def __init__(self, resp: aiohttp.ClientResponse, idle_s: float) -> None:
        self._resp = resp
        self._idle_s = idle_s

    async def chunks(self) -> AsyncIterator[bytes]:
        # aiohttp's own sock_read timeout misses some broken streams (a bad
        # chunk-size line after the first chunk hangs the read for ever), so
        # an idle watch of our own bounds every wait for the next chunk.
        content = self._resp.content
        watch = _IdleWatch(self._idle_s)
        try:
            while True:
                watch.waiting()
                chunk = await content.readany()
                watch.got()
                if not chunk:
                    return
                yield chunk
        except asyncio.CancelledError:
            if watch.fired():
                raise UpstreamFailure(
                    "timeout", f"the stream was idle for {self._idle_s:.0f} s (timeout_s)"
                ) from None
            raise
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=True) from None
        finally:
            watch.stop()

    def release(self) -> None:
        # A stream abandoned half-way must close its connection, or the
        # upstream keeps generating tokens nobody will read.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class _IdleWatch:
    """Cancels the task waiting for a chunk once it has waited `idle_s`. One
    timer per stream, re-armed only when it fires, so a chunk costs two clock
    reads, not a timer."""

    def __init__(self, idle_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle_s = idle_s
        self._since: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._fired = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(idle_s, self._check)

    def waiting(self) -> None:
        self._since = self._loop.time()
        self._task = asyncio.current_task()  # the first chunk and the rest may differ

    def got(self) -> None:
        self._since = None

    def _check(self) -> None:
        since = self._since
        now = self._loop.time()
        if since is not None and now - since >= self._idle_s and self._task is not None:
            self._fired = True
            self._timer = None
            self._task.cancel()
            return
        start = since if since is not None else now
        self._timer = self._loop.call_at(start + self._idle_s, self._check)

    def fired(self) -> bool:
        """True (once) when our timer caused the cancellation being handled."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
