"""What an upstream failure means: whether another try can help, and the error
the caller sees. That error carries the upstream's own reason (redacted, at
most `MAX_REASON_CHARS`), and its `param` and `code` when it is the request
that was refused; never our credentials.

Which failures are tried again (before the first byte only, within the retry
budget and the deadline):

* The request's fault, never retried: 4xx other than 401, 403, 404, 408 and
  429, and a 5xx whose error type says the request is invalid (answered 400).
* The deployment's fault and not transient: 401 and 403 (its credentials), 404
  (its base_url), 500 and other 5xx not listed below, malformed HTTP. Tried on
  another deployment, never again on the same one: the same answer would come.
* Transient: cannot connect, not ready, 408, 502, 503, 504. Tried again, on the
  same deployment if no other can take it.
* 429: the deployment cools down for its Retry-After; another may take the retry.
* Timeouts: not retried; the deadline or the first-byte limit is spent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import orjson

from forebay.config.settings import Deployment
from forebay.errors import ForebayError, UpstreamFailure, upstream_error
from forebay.gateway.redact import Redactor
from forebay.upstreams.base import Endpoint

MAX_REASON_CHARS = 500
# Upstream statuses that are about the caller's request; passed back with their status.
CALLER_STATUSES = frozenset({400, 413, 422})
# 4xx that are about the deployment (credentials, base_url, its rate limit).
DEPLOYMENT_STATUSES = frozenset({401, 403, 404, 429})
TRANSIENT_STATUSES = frozenset({408, 502, 503, 504})
# Error types (lower case) with which servers say "your request is invalid".
INVALID_REQUEST_TYPES = frozenset(
    {"invalid_request_error", "invalid_request", "badrequesterror", "bad_request", "validation"}
)
_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


class Retry(Enum):
    NO = "no"
    ELSEWHERE = "elsewhere"  # on another deployment only
    ANYWHERE = "anywhere"  # the same deployment too, when it is the only one


# Statuses with which providers say "saturated": 429 (OpenAI, Gemini's
# RESOURCE_EXHAUSTED, Bedrock's ThrottlingException), 503 (Gemini's UNAVAILABLE,
# Bedrock's ServiceUnavailableException, vLLM and others) and Anthropic's 529
# overloaded_error (its adapter's kind is "unavailable").
OVERLOAD_STATUSES = frozenset({429, 503, 529})


def overload_signal(failure: UpstreamFailure) -> bool:
    """Failures that say the deployment is saturated (its limit may drop)."""
    return failure.kind == "timeout" or failure.status in OVERLOAD_STATUSES


def retry_rule(failure: UpstreamFailure) -> Retry:
    if failure.kind in ("connect", "unavailable"):
        return Retry.ANYWHERE
    if failure.kind == "protocol":
        return Retry.ELSEWHERE
    if failure.kind != "status":
        return Retry.NO  # timeouts
    status = failure.status or 0
    if status in TRANSIENT_STATUSES:
        return Retry.ANYWHERE
    if status >= 500:
        invalid = _says_invalid(parse_upstream_error(failure.body))
        return Retry.NO if invalid else Retry.ELSEWHERE
    return Retry.ELSEWHERE if status in DEPLOYMENT_STATUSES else Retry.NO


def deployment_at_fault(failure: UpstreamFailure) -> bool:
    """Whether the failure counts against the deployment's health (ejection)."""
    if failure.kind == "deadline":
        return False  # the request's own deadline ran out
    return failure.kind != "status" or retry_rule(failure) is not Retry.NO


def short(failure: UpstreamFailure) -> str:
    return f"HTTP {failure.status}" if failure.status else failure.kind


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """The parts of an upstream's error body worth passing on (not yet redacted)."""

    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | None = None


def parse_upstream_error(body: bytes) -> UpstreamError:
    """Read the error shapes servers use: OpenAI's envelope (also vLLM's and
    llama.cpp's, whose `code` is the HTTP status and is dropped), vLLM's older
    top-level one, `{"error": "..."}` (Ollama, TGI), FastAPI's `detail`, and
    plain text or an HTML page's title."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return UpstreamError(message=_plain_text(body))
    if not isinstance(obj, dict):
        return UpstreamError()
    err = obj.get("error")
    if isinstance(err, str):
        return UpstreamError(message=err, type=_str(obj.get("error_type")))
    if not isinstance(err, dict):
        if obj.get("object") == "error" or "message" in obj:
            err = obj  # vLLM before 0.10, and others: the fields at the top level
        elif "detail" in obj:
            return UpstreamError(message=_detail(obj["detail"]))
        else:
            return UpstreamError()
    return UpstreamError(
        message=_str(err.get("message")),
        type=_str(err.get("type")),
        param=_str(err.get("param")),
        code=_str(err.get("code")),
    )


def as_api_error(
    failure: UpstreamFailure, dep: Deployment, endpoint: Endpoint, redactor: Redactor
) -> ForebayError:
    name = dep.name
    if failure.kind != "status":
        return _transport_error(failure, name)
    status = failure.status or 0
    up = parse_upstream_error(redactor.redact(failure.body))
    reason = _reason(up.message, redactor)
    param = redactor.redact_text(up.param)[:200] if up.param else None
    said = f"HTTP {status}: {reason}" if reason else f"HTTP {status}"
    if retry_rule(failure) is Retry.NO:
        code = redactor.redact_text(up.code)[:100] if up.code else "upstream_rejected_request"
        return ForebayError(
            status if status in CALLER_STATUSES else 400,
            reason or f"The upstream rejected the request (HTTP {status}).",
            code=code,
            param=param,
        )
    if status == 429:
        retry = failure.retry_after or ""
        retry = retry if retry.isdigit() else "1"
        return ForebayError(
            429,
            f"Deployment '{name}' is rate limiting Forebay ({said}); retry after {retry} s.",
            type="rate_limit_error",
            code="upstream_rate_limited",
            headers={"retry-after": retry},
        )
    if status in (401, 403):
        return upstream_error(
            502,
            f"Deployment '{name}' rejected Forebay's credentials ({said}); an admin must fix "
            "its api_key (or its headers) in forebay.yaml.",
            code="upstream_auth_failed",
        )
    if status == 404:
        return upstream_error(
            502,
            f"Deployment '{name}' answered {said}{_not_found_hint(dep, endpoint)}",
            code="upstream_not_found",
        )
    if status == 503:
        hint = failure.retry_after or ""
        wait = int(hint) if hint.isdigit() else 5
        return upstream_error(
            503,
            f"Deployment '{name}' is not ready or overloaded ({said}); retry in {wait} s.",
            code="upstream_unavailable",
            retry_after=wait,
        )
    if status == 504:
        return upstream_error(
            504,
            f"Deployment '{name}' timed out upstream ({said}); retry, or ask for fewer tokens.",
            code="upstream_timeout",
        )
    return upstream_error(
        502,
        f"Deployment '{name}' failed ({said}); retry, and tell an admin if it persists.",
        code="upstream_failed",
    )


def _not_found_hint(dep: Deployment, endpoint: Endpoint) -> str:
    """What an admin should check after a 404, by provider: each has its own
    way of naming what it serves."""
    model = dep.upstream_model[:100]
    if dep.provider == "azure_openai":
        where = f"azure_deployment '{dep.azure_deployment}'" if dep.azure_deployment else "model"
        return (
            f": check its {where} and api_version '{dep.api_version}' in forebay.yaml "
            "(Azure answers 404 DeploymentNotFound for a deployment its resource does not "
            "have), and that base_url is the resource endpoint, https://NAME.openai.azure.com."
        )
    if dep.provider == "anthropic":
        return (
            f": check its model '{model}' in forebay.yaml (Anthropic answers 404 for a model "
            "it does not serve), and that base_url is the host alone, https://api.anthropic.com."
        )
    if dep.provider == "gemini":
        return (
            f": check its model '{model}' in forebay.yaml (a Gemini model name such as "
            "gemini-2.5-flash, that its key may use)."
        )
    if dep.provider == "bedrock":
        region = dep.aws.region if dep.aws is not None else "its region"
        return (
            f": check its model '{model}' in forebay.yaml (a model id, inference profile or "
            f"ARN enabled in {region})."
        )
    path = f"{urlsplit(dep.base_url or '').path}/{endpoint.value}"
    if dep.provider == "openai":
        return (
            f" to POST {path}: check its model '{model}' in forebay.yaml (one its key may "
            "use) and its base_url (https://api.openai.com/v1)."
        )
    return (
        f" to POST {path}: its base_url in forebay.yaml is probably wrong "
        "(OpenAI-compatible servers usually want it to end in /v1), or it does not serve "
        "this endpoint."
    )


def error_type_for(err: ForebayError) -> str:
    return err.code or err.type


def _transport_error(failure: UpstreamFailure, name: str) -> ForebayError:
    if failure.kind == "deadline":
        return upstream_error(
            504,
            f"Deployment '{name}' did not answer within this request's deadline; retry, "
            "ask for fewer tokens, or use a traffic class with a longer deadline.",
            code="upstream_timeout",
        )
    if failure.kind == "timeout":
        return upstream_error(
            504,
            f"Deployment '{name}' did not answer in time; retry, or ask for fewer tokens.",
            code="upstream_timeout",
        )
    if failure.kind == "unavailable":
        return upstream_error(
            503,
            f"Deployment '{name}' is not ready or overloaded; retry in 5 s.",
            code="upstream_unavailable",
            retry_after=5,
        )
    if failure.kind == "connect":
        return upstream_error(
            502,
            f"Deployment '{name}' could not be reached ({failure.detail}); "
            "retry, and tell an admin if it persists.",
            code="upstream_unreachable",
        )
    return upstream_error(
        502,
        f"Deployment '{name}' failed ({failure.detail}); retry, and tell an admin if it persists.",
        code="upstream_failed",
    )


def _says_invalid(up: UpstreamError) -> bool:
    return up.type is not None and up.type.lower() in INVALID_REQUEST_TYPES


def _reason(message: str | None, redactor: Redactor) -> str:
    if not message:
        return ""
    text = _SPACE.sub(" ", redactor.redact_text(message)).strip()
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _detail(detail: Any) -> str | None:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}]
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc[1:]) if isinstance(loc, list) else ""
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        return "; ".join(parts) or None
    return None


def _plain_text(body: bytes) -> str | None:
    text = body[: 4 * MAX_REASON_CHARS].decode("utf-8", "replace").strip()
    if text.startswith("<"):  # an HTML error page: its title, if any
        match = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = match.group(1) if match else _TAGS.sub(" ", text)
    return _SPACE.sub(" ", text).strip() or None
