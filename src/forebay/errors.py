"""The error types every layer raises. Nothing here knows a wire format: `api/`
renders a `ForebayError` in the caller's envelope (OpenAI's today), so the
gateway, the stores and the adapters never import the HTTP layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal


class ForebayError(Exception):
    """An error that becomes one HTTP response: status, a message that says what
    to fix (never a key, a secret or prompt content), and OpenAI's `type`,
    `code` and `param`."""

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


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ForebayError:
    return ForebayError(400, message, param=param, code=code)


def unauthorized(message: str) -> ForebayError:
    return ForebayError(401, message, type="authentication_error", code="invalid_api_key")


def forbidden(message: str, *, code: str = "model_not_allowed") -> ForebayError:
    return ForebayError(403, message, type="permission_error", code=code)


def not_found(
    message: str, *, code: str = "model_not_found", param: str | None = None
) -> ForebayError:
    return ForebayError(404, message, code=code, param=param)


def too_large(limit: int) -> ForebayError:
    return ForebayError(
        413,
        f"Request body is larger than the {limit} byte limit; send a smaller request "
        "or raise server.max_body_bytes.",
        code="request_too_large",
    )


def internal_error(request_id: str) -> ForebayError:
    """An unexpected exception: the caller learns nothing of it but the request id."""
    return ForebayError(
        500,
        f"Forebay failed while handling this request (an internal error, logged under "
        f"request id {request_id}); retry, and give an admin the request id if it persists.",
        type="server_error",
        code="internal_error",
        headers={"x-request-id": request_id},
    )


def upstream_error(
    status: int, message: str, *, code: str, retry_after: int | None = None
) -> ForebayError:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return ForebayError(status, message, type="upstream_error", code=code, headers=headers)


# "deadline": the request's own deadline ran out while it waited, which says
# nothing about the deployment's health (unlike "timeout", its own limit).
FailureKind = Literal["connect", "timeout", "deadline", "status", "protocol", "unavailable"]


class UpstreamFailure(Exception):
    """The upstream could not give an answer. `status` is set for HTTP errors;
    `body` is the upstream's error body as it came (redact before relaying it)."""

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


class ConfigError(Exception):
    """A configuration problem, already phrased for the person who must fix it."""


class TenancyError(Exception):
    """A change to tenants, keys or limits that cannot be carried out, phrased for a person."""
