"""Render a `ForebayError` in the caller's envelope, OpenAI's or (on the
Messages routes) Anthropic's, so every client SDK shows our messages as-is
and raises its own typed exception for them."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

from forebay.errors import ForebayError


def openai_error_body(err: ForebayError) -> bytes:
    return orjson.dumps(
        {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    )


def error_response(err: ForebayError, extra_headers: Mapping[str, str] | None = None) -> Response:
    headers = {**err.headers, **(extra_headers or {})}
    return Response(openai_error_body(err), err.status, headers, media_type="application/json")


# Anthropic's error types by status. Forebay's 503 (shedding, nothing ready,
# an overloaded upstream) is Anthropic's 529 overloaded_error, which its
# clients retry with backoff as they would Anthropic's own.
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_STATUS = {503: 529}


def anthropic_error(err: ForebayError) -> tuple[int, bytes]:
    status = ANTHROPIC_STATUS.get(err.status, err.status)
    kind = ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body: dict[str, object] = {"type": "error", "error": {"type": kind, "message": err.message}}
    request_id = err.headers.get("x-request-id")
    if request_id:
        body["request_id"] = request_id
    return status, orjson.dumps(body)


def anthropic_error_response(err: ForebayError) -> Response:
    """`{"type": "error", "error": {"type", "message"}}`, as the Anthropic SDKs
    parse it into their typed exceptions."""
    status, body = anthropic_error(err)
    return Response(body, status, err.headers, media_type="application/json")
