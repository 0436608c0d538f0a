"""The one interface every upstream adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure

if TYPE_CHECKING:
    from forebay.upstreams.probe import ProbeResult


class Endpoint(StrEnum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"  # OpenAI Responses
    MESSAGES = "messages"  # Anthropic Messages; also the generation call of other native wires


class WireProtocol(StrEnum):
    """The generation protocols Forebay speaks, to clients and to upstreams
    (protocols/ holds one codec each). An upstream lists those it speaks
    natively in `Upstream.wire`; a request in another is translated."""

    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    GEMINI = "gemini"
    BEDROCK_CONVERSE = "bedrock_converse"


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    body: bytes


class TokenCounter(Protocol):
    """An upstream whose provider counts a prompt's tokens without generating
    (Anthropic count_tokens, Gemini countTokens, Bedrock CountTokens). The
    payload is a generation body in the upstream's own protocol; the answer is
    the provider's count of its input tokens."""

    async def count_tokens(self, payload: dict[str, Any]) -> int: ...


def token_count(reply: UpstreamReply, field: str) -> int:
    """The count in a token-counting answer `{field: N}`; a protocol failure
    (a garbled answer) otherwise."""
    try:
        value = orjson.loads(reply.body).get(field)
    except (orjson.JSONDecodeError, AttributeError):
        value = None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UpstreamFailure("protocol", f"the upstream's token count has no {field}")
    return value


class UpstreamStream(Protocol):
    """An opened 2xx stream: raw bytes as they arrive, then release."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Upstream(Protocol):
    deployment: Deployment
    # The generation protocols it speaks natively: a request in one of them is
    # relayed untouched, any other is translated (gateway/translate.py).
    wire: frozenset[WireProtocol]
    # OpenAI's own Chat API (OpenAI, Azure): a translated request carries none
    # of the fields other Chat servers take for signed reasoning.
    strict_chat: bool

    def ready(self) -> bool:
        """Cheap, synchronous: may this deployment be tried right now?"""
        ...

    async def probe(self, timeout_s: float) -> ProbeResult:
        """A health check off the request path: (healthy, why)."""
        ...

    # `headers`: the caller's headers that may reach an upstream (passed_headers.py
    # decides which, and `for_upstream` which of them this upstream's protocol gets).
    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamReply: ...

    async def open_stream(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamStream: ...

    async def close(self) -> None: ...
