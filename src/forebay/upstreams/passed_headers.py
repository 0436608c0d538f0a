"""The one list of a caller's request headers that reach an upstream, and which.

It is an allow-list: a header not named in `PASSED` is never passed on, so the
caller's credentials (Authorization, x-api-key, api-key, x-goog-api-key, Cookie,
Proxy-Authorization), hop-by-hop headers (Connection, Keep-Alive, TE, Trailer,
Transfer-Encoding, Upgrade, Proxy-*), Host, Content-Length and Content-Encoding
(the body is Forebay's own encoding of it), and client telemetry (User-Agent,
x-stainless-*) stay here by construction. Each upstream authenticates with its
deployment's own key (transport.request_headers).

    idempotency-key    OpenAI and Anthropic upstreams: the caller's key for a retry
                       that must not run twice; the same for every try Forebay makes
    openai-beta        OpenAI-protocol upstreams (Chat, Responses): beta features
    anthropic-beta     Anthropic Messages upstreams: beta features
    anthropic-version  Anthropic Messages upstreams: the version the caller's body and
                       parser are written for (an adapter sets its own when none came)

Not passed, on purpose: OpenAI-Organization and OpenAI-Project (they choose the
account the deployment's key bills: the deployment decides that), x-request-id
(Forebay names its requests), and anything else a caller invents. A header the
deployment's configuration sets (`headers:`) is the deployment's: a caller's
value never replaces it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from forebay.upstreams.base import WireProtocol

_OPENAI = frozenset({WireProtocol.OPENAI_CHAT, WireProtocol.OPENAI_RESPONSES})
_ANTHROPIC = frozenset({WireProtocol.ANTHROPIC_MESSAGES})

PASSED: Mapping[str, frozenset[WireProtocol]] = {
    "idempotency-key": _OPENAI | _ANTHROPIC,
    "openai-beta": _OPENAI,
    "anthropic-beta": _ANTHROPIC,
    "anthropic-version": _ANTHROPIC,
}
_NONE: frozenset[WireProtocol] = frozenset()
NAMES = frozenset(name.encode() for name in PASSED)  # as ASGI names them
MAX_VALUE = 1024  # no legitimate value of these is longer; a longer one is not passed


def passable(name: bytes, value: bytes) -> bool:
    """Whether a request header (ASGI raw, name lower-case) may reach an upstream
    at all; gateway/request_headers.scan collects those in its one pass."""
    return name in NAMES and len(value) <= MAX_VALUE


def for_upstream(
    passed: Mapping[str, str] | None,
    wires: Collection[WireProtocol],
    configured: Collection[str] = (),
) -> dict[str, str] | None:
    """Of a caller's passable headers, those an upstream speaking `wires` gets,
    less any its deployment sets itself (`configured`: lower-case names)."""
    if not passed:
        return None
    out = {
        name: value
        for name, value in passed.items()
        if name not in configured and not PASSED.get(name, _NONE).isdisjoint(wires)
    }
    return out or None
