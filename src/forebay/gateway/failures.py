"""What an upstream failure means: whether to try another deployment, and
the error the caller sees (never with our upstream credentials in it)."""

from __future__ import annotations

import orjson

from forebay.errors import ForebayError, UpstreamFailure, upstream_error

# Upstream statuses that say "this deployment cannot serve now", worth another.
FAILOVER_STATUSES = frozenset({429, 500, 502, 503, 504})
# Upstream statuses that are about the caller's request; passed back as-is.
CALLER_STATUSES = frozenset({400, 413, 422})


def overload_signal(failure: UpstreamFailure) -> bool:
    """Failures that say the deployment is saturated (its limit should drop)."""
    return failure.kind == "timeout" or failure.status in (429, 503)


def worth_failover(failure: UpstreamFailure) -> bool:
    if failure.kind in ("connect", "unavailable", "protocol"):
        return True
    return failure.kind == "status" and failure.status in FAILOVER_STATUSES


def short(failure: UpstreamFailure) -> str:
    return f"HTTP {failure.status}" if failure.status else failure.kind


def as_api_error(failure: UpstreamFailure, deployment: str, secret: str | None) -> ForebayError:
    if failure.kind == "status" and failure.status in CALLER_STATUSES:
        body = failure.body
        if secret and secret.encode() in body:
            body = body.replace(secret.encode(), b"[redacted]")
        message = (
            upstream_message(body) or f"the upstream rejected the request (HTTP {failure.status})"
        )
        return ForebayError(failure.status, message, code="upstream_rejected_request")
    if failure.kind == "status" and failure.status == 429:
        retry = failure.retry_after or ""
        retry = retry if retry.isdigit() else "1"
        return ForebayError(
            429,
            f"Deployment '{deployment}' is rate limiting Forebay; retry after {retry} s.",
            type="rate_limit_error",
            code="upstream_rate_limited",
            headers={"retry-after": retry},
        )
    if failure.kind == "status" and failure.status in (401, 403):
        return upstream_error(
            502,
            f"Deployment '{deployment}' rejected Forebay's credentials (HTTP {failure.status}); "
            "an admin must fix its api_key in forebay.yaml.",
            code="upstream_auth_failed",
        )
    if failure.kind == "timeout":
        return upstream_error(
            504,
            f"Deployment '{deployment}' did not answer in time; retry, or ask for fewer tokens.",
            code="upstream_timeout",
        )
    if failure.kind == "unavailable" or failure.status == 503:
        hint = failure.retry_after or ""
        wait = int(hint) if hint.isdigit() else 5
        return upstream_error(
            503,
            f"Deployment '{deployment}' is not ready or overloaded; retry in {wait} s.",
            code="upstream_unavailable",
            retry_after=wait,
        )
    if failure.status == 504:
        return upstream_error(
            504,
            f"Deployment '{deployment}' timed out upstream; retry, or ask for fewer tokens.",
            code="upstream_timeout",
        )
    if failure.kind == "connect":
        return upstream_error(
            502,
            f"Deployment '{deployment}' could not be reached; "
            "retry, and tell an admin if it persists.",
            code="upstream_unreachable",
        )
    detail = f"HTTP {failure.status}" if failure.status else failure.detail
    return upstream_error(
        502,
        f"Deployment '{deployment}' failed ({detail}); retry, and tell an admin if it persists.",
        code="upstream_failed",
    )


def upstream_message(body: bytes) -> str | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:2000]
        if isinstance(err, str):
            return err[:2000]
        if isinstance(obj.get("detail"), str):
            return str(obj["detail"])[:2000]
    return None


def error_type_for(err: ForebayError) -> str:
    return err.code or err.type
