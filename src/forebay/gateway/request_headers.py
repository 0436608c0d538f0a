"""The request headers Forebay reads, collected in one pass over the raw ASGI
list and kept on the request's scope: authentication, the body's declared
length, the traffic class, Anthropic's version and the headers passed on to an
upstream each read them from here, rather than walking the list once apiece.

Starlette's `request.headers.get` raises and catches a KeyError for every absent
header, which profiled at tens of microseconds a request on the hot path under
load; a lookup here is an attribute read. As a walk for one name would, a
header sent twice counts by its first value (a passed one by its last).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request

from forebay.gateway.classes import CLASS_HEADER_RAW
from forebay.upstreams.passed_headers import passable


@dataclass(slots=True)
class RequestHeaders:
    authorization: str | None = None
    x_api_key: str | None = None  # Anthropic's clients send their key as this
    api_key: str | None = None  # and Azure's as this
    content_length: str | None = None
    traffic_class: str | None = None  # x-forebay-class (gateway/classes.py)
    anthropic_version: str | None = None
    passed: dict[str, str] | None = None  # those an upstream may get (passed_headers.py)


# Raw (lower-case) name -> the field it fills.
_FIELDS = {
    b"authorization": "authorization",
    b"x-api-key": "x_api_key",
    b"api-key": "api_key",
    b"content-length": "content_length",
    CLASS_HEADER_RAW: "traffic_class",
    b"anthropic-version": "anthropic_version",
}
_SCOPE_KEY = "forebay.request_headers"


def scan(raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
    seen = RequestHeaders()
    for name, value in raw:
        field = _FIELDS.get(name)
        if field is not None and getattr(seen, field) is None:
            setattr(seen, field, value.decode("latin-1"))
        if passable(name, value):
            if seen.passed is None:
                seen.passed = {}
            seen.passed[name.decode("latin-1")] = value.decode("latin-1")
    return seen


def request_headers(request: Request) -> RequestHeaders:
    """The request's headers, scanned on the first call and kept on its scope."""
    scope = request.scope
    seen: RequestHeaders | None = scope.get(_SCOPE_KEY)
    if seen is None:
        seen = scope[_SCOPE_KEY] = scan(scope["headers"])
    return seen
