"""The OpenAI error envelope, so every client SDK shows our messages as-is.

Messages say what to fix and never echo keys, secrets or prompt content.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response


class ApiError(Exception):
    """An error that becomes one HTTP response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def response(self, extra_headers: Mapping[str, str] | None = None) -> Response:
        headers = {**self.headers, **(extra_headers or {})}
        return Response(self.body(), self.status, headers, media_type="application/json")


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, type="authentication_error", code="invalid_api_key")


def forbidden(message: str, *, code: str = "model_not_allowed") -> ApiError:
    return ApiError(403, message, type="permission_error", code=code)


def not_found(message: str, *, code: str = "model_not_found", param: str | None = None) -> ApiError:
    return ApiError(404, message, code=code, param=param)


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"Request body is larger than the {limit} byte limit; send a smaller request "
        "or raise server.max_body_bytes.",
        code="request_too_large",
    )


def upstream_error(
    status: int, message: str, *, code: str, retry_after: int | None = None
) -> ApiError:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return ApiError(status, message, type="upstream_error", code=code, headers=headers)
