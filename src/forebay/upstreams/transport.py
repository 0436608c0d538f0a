"""Every way an HTTP exchange with an upstream can break below the status code
(no connection, DNS, TLS, malformed HTTP, bad framing, a connection closed
half-way, a read timeout), turned into one `UpstreamFailure` with a short kind
and detail. Details name the exception class, never the upstream's bytes, since
they may reach a tenant."""

from __future__ import annotations

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from forebay.config.settings import Deployment
from forebay.errors import FailureKind, UpstreamFailure

# What aiohttp and the socket layer raise: ClientError covers connection,
# response (bad status line, header too long) and payload (chunking, length,
# encoding) errors; the rest are what a parser or a socket raises underneath.
# UnicodeError is a ValueError, asyncio.IncompleteReadError an EOFError.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    HttpProcessingError,
    OSError,
    ValueError,
    EOFError,
)


def describe(exc: BaseException) -> str:
    """What went wrong, for a person: 'DNS lookup failed', 'connection refused', ..."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "timed out connecting"
    if isinstance(exc, TimeoutError):
        return "timed out waiting for data"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed for its host"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS: its certificate is not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused or host unreachable"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    if isinstance(exc, aiohttp.ClientResponseError | HttpProcessingError):
        return "its answer is not valid HTTP"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "its answer broke off (bad framing, or closed early)"
    return "the connection failed"


def transport_failure(
    exc: BaseException, *, answered: bool, down_kind: FailureKind = "connect"
) -> UpstreamFailure:
    """The failure for `exc`. `answered`: a status line had been read, so a
    broken connection is a broken answer, not an unreachable upstream."""
    detail = f"{describe(exc)} ({type(exc).__name__})"
    if isinstance(exc, TimeoutError):
        return UpstreamFailure("timeout", detail)
    if not answered and isinstance(exc, aiohttp.ClientConnectionError):
        return UpstreamFailure(down_kind, detail)
    return UpstreamFailure("protocol", detail)


def request_headers(deployment: Deployment) -> dict[str, str]:
    """The credentials and extra headers every request to `deployment` carries; the
    caller's own headers that may go with them are passed_headers.py's to choose."""
    headers = dict(deployment.headers)
    if deployment.api_key:
        headers["authorization"] = f"Bearer {deployment.api_key}"
    return headers
