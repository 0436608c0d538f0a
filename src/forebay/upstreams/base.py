"""The one interface every upstream adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from forebay.config import Deployment


class Endpoint(StrEnum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


FailureKind = Literal["connect", "timeout", "status", "protocol", "unavailable"]


class UpstreamFailure(Exception):
    """The upstream could not give an answer. `status` is set for HTTP errors;
    `body` is the upstream's error body (already free of our secrets)."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        body: bytes = b"",
        retry_after: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.body = body
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    body: bytes


class UpstreamStream(Protocol):
    """An opened 2xx stream: raw bytes as they arrive, then release."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Upstream(Protocol):
    deployment: Deployment

    def ready(self) -> bool:
        """Cheap, synchronous: may this deployment be tried right now?"""
        ...

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> UpstreamReply: ...

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> UpstreamStream: ...

    async def close(self) -> None: ...
