"""Try a deployment: GET its model list (by default {base_url}/models) with its
credentials and a short timeout, and say what is wrong in the words an admin
needs: unreachable, DNS, TLS, a bad key, a wrong base_url, a model the server
does not serve. One probe for `forebay config check --probe` and for the
gateway's background health probes (gateway/probes.py), both through the
adapter's `probe`, which says where its provider lists models (`ProbeTarget`)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson

from forebay.config.settings import Deployment
from forebay.upstreams.transport import TRANSPORT_ERRORS, describe, request_headers


@dataclass(frozen=True, slots=True)
class ProbeResult:
    deployment: str
    ok: bool
    verdict: str  # ok, unreachable, DNS, TLS, bad key, wrong base_url, model not served, ...
    detail: str = ""
    status: int | None = None
    body: bytes = field(default=b"", repr=False)  # an error body, to redact before showing

    @property
    def healthy(self) -> bool:
        """Fit to take requests, for the background health probes: the server is
        there and talks (any answer but a refused key, a missing path or a 5xx).
        Stricter verdicts (a model it does not list) are for `config check --probe`
        only: some servers list other names than they serve (Azure lists base
        models, not deployments)."""
        status = self.status
        return status is not None and status < 500 and status not in _FATAL


_FATAL = frozenset({401, 403, 404})


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """Where a provider lists its models, and how to read the list."""

    url: str
    not_found_hint: str = "does its base_url end in /v1?"
    # False: the list names base models, not what the deployment is called (Azure).
    names_deployment: bool = True
    # True: ids are dated ("claude-sonnet-4-5-20250929") and a model may be written
    # as their alias, the id without its date.
    dated_ids: bool = False


async def probe(
    dep: Deployment,
    *,
    timeout_s: float = 5.0,
    session: aiohttp.ClientSession | None = None,
    target: ProbeTarget | None = None,
) -> ProbeResult:
    """With `session` (one that already sends the deployment's headers), or a new
    one with OpenAI-style credentials; `target` defaults to {base_url}/models."""
    assert dep.base_url is not None
    target = target or ProbeTarget(f"{dep.base_url.rstrip('/')}/models")
    url = target.url
    where = _without_credentials(url)
    timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, dep.connect_timeout_s))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(
                    aiohttp.ClientSession(headers=request_headers(dep))
                )
            resp = await stack.enter_async_context(session.get(url, timeout=timeout))
            body = await resp.read()
            status = resp.status
    except TRANSPORT_ERRORS as exc:
        return ProbeResult(dep.name, False, _verdict(exc), f"GET {where}: {describe(exc)}")
    if status in (401, 403):
        detail = f"GET {where} answered HTTP {status}: check its api_key (or headers)"
        return ProbeResult(dep.name, False, "bad key", detail, status, body[:4096])
    if status == 404:
        detail = f"GET {where} answered HTTP 404: {target.not_found_hint}"
        return ProbeResult(dep.name, False, "wrong base_url", detail, status, body[:4096])
    if status >= 400:
        return ProbeResult(dep.name, False, f"HTTP {status}", f"GET {where}", status, body[:4096])
    served = _model_ids(body)
    if served is None:
        return ProbeResult(dep.name, True, "ok", "reachable; it does not list its models", status)
    if not target.names_deployment:
        detail = "reachable; its model list does not name deployments, so not checked"
        return ProbeResult(dep.name, True, "ok", detail, status)
    if not _serves(dep.upstream_model, served, dated=target.dated_ids):
        listed = ", ".join(sorted(served)[:10]) or "nothing"
        detail = f"'{dep.upstream_model}' is not among the models it serves: {listed}"
        return ProbeResult(dep.name, False, "model not served", detail, status)
    return ProbeResult(dep.name, True, "ok", f"serves '{dep.upstream_model}'", status)


def _verdict(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS"
    if isinstance(exc, aiohttp.ClientConnectorError | TimeoutError):
        return "unreachable"
    return "broken answer"


def _serves(model: str, served: set[str], *, dated: bool) -> bool:
    if model in served:
        return True
    return dated and any(_DATED.fullmatch(m[len(model) :]) for m in served if m.startswith(model))


_DATED = re.compile(r"-\d{8}")


def _model_ids(body: bytes) -> set[str] | None:
    """The ids of an OpenAI-style model list, or None when it is not one."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        return None
    return {str(m["id"]) for m in data if isinstance(m, dict) and "id" in m}


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
