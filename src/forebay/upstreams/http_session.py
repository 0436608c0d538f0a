"""The pooled HTTP session the native adapters (Gemini, Bedrock) send through,
with every transport error mapped to `UpstreamFailure` as http_base.py does.
Unlike HttpUpstream it takes headers per request (a SigV4 signature covers
each one) and URLs pre-encoded, so the path that was signed is the path sent,
and it bounds the bodies it reads."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from yarl import URL

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.upstreams.stream import HttpStream
from forebay.upstreams.transport import TRANSPORT_ERRORS, transport_failure

MAX_ERROR_BODY = 64 * 1024
MAX_REPLY_BODY = 64 << 20  # a generation reply larger than this is not one


class Reply:
    """A whole answer: status, headers, body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class PooledSession:
    def __init__(self, deployment: Deployment, headers: Mapping[str, str]) -> None:
        self.deployment = deployment
        self._headers = dict(headers)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=deployment.connect_timeout_s, sock_read=deployment.timeout_s
        )

    def client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.deployment.max_connections, keepalive_timeout=30, ttl_dns_cache=300
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

    async def open(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        limits: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send; the response is open (its status and headers read, its body not)."""
        try:
            return await self.client().request(
                method,
                URL(url, encoded=True),
                data=data,
                headers=headers,
                timeout=limits or self._timeout,
            )
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=False) from None

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        limits: aiohttp.ClientTimeout | None = None,
    ) -> Reply:
        resp = await self.open(method, url, data=data, headers=headers, limits=limits)
        try:
            body = await _read(resp, MAX_ERROR_BODY if resp.status >= 400 else MAX_REPLY_BODY)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, answered=True) from None
        finally:
            resp.release()
        if resp.status < 400 and len(body) > MAX_REPLY_BODY:
            raise UpstreamFailure("protocol", "the upstream's reply is larger than 64 MB")
        return Reply(
            resp.status, resp.headers, body[:MAX_ERROR_BODY] if resp.status >= 400 else body
        )

    async def stream(
        self, url: str, *, data: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[HttpStream | None, Reply | None]:
        """An open 2xx stream, or the error reply (its body read) when it failed."""
        resp = await self.open("POST", url, data=data, headers=headers)
        if resp.status < 400:
            return HttpStream(resp, self.deployment.timeout_s), None
        try:
            body = await _read(resp, MAX_ERROR_BODY)
        except TRANSPORT_ERRORS:
            body = b""  # the status says enough
        finally:
            resp.release()
        return None, Reply(resp.status, resp.headers, body)


async def _read(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first `limit` + 1 bytes when it is longer (so the caller can tell)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await resp.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def probe_verdict(failure: UpstreamFailure) -> str:
    """A probe's verdict for a request that got no answer (the words of upstreams/probe.py)."""
    if "DNS" in failure.detail:
        return "DNS"
    if "TLS" in failure.detail:
        return "TLS"
    return "unreachable" if failure.kind in ("connect", "timeout") else "broken answer"
