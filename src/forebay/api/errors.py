"""Render a `ForebayError` in OpenAI's error envelope, so every client SDK shows
our messages as-is."""

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
