"""Google's Gemini API as an upstream: POST {base}/v1beta/models/{model}:generateContent,
:streamGenerateContent?alt=sse and :countTokens, the key in `x-goog-api-key`.

A transport: it sends the Gemini body the codec (protocols/gemini.py) made and
returns bytes. Google's errors, `{"error": {"code", "message", "status",
"details"}}`, become `UpstreamFailure`s with two corrections so that the
gateway's retry rules read them right: a 429's wait is in its RetryInfo detail
(`retryDelay: "17s"`), not a Retry-After header; and a bad key is answered 400
INVALID_ARGUMENT (reason API_KEY_INVALID), which is the deployment's fault, so
it is reported as 401.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.upstreams.base import Endpoint, UpstreamReply, WireProtocol, token_count
from forebay.upstreams.http_session import PooledSession, Reply, probe_verdict
from forebay.upstreams.probe import ProbeResult
from forebay.upstreams.retry_hints import retry_after
from forebay.upstreams.stream import HttpStream

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class GeminiUpstream:
    wire = frozenset({WireProtocol.GEMINI})
    strict_chat = False

    def __init__(self, deployment: Deployment, *, base_url: str | None = None) -> None:
        self.deployment = deployment
        self.base_url = (base_url or deployment.base_url or DEFAULT_BASE_URL).rstrip("/")
        headers = {"content-type": "application/json", **dict(deployment.headers)}
        if deployment.api_key:
            headers["x-goog-api-key"] = deployment.api_key
        self._http = PooledSession(deployment, headers)
        model = deployment.upstream_model.removeprefix("models/")
        # "tunedModels/x" keeps its collection; a bare name is one of models/.
        self._model_path = quote(model, safe="/") if "/" in model else f"models/{quote(model)}"

    def ready(self) -> bool:
        return True

    async def close(self) -> None:
        await self._http.close()

    def _url(self, method: str) -> str:
        return f"{self.base_url}/v1beta/{self._model_path}:{method}"

    # `headers`: none of a caller's headers means anything to Gemini (passed_headers.py).
    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamReply:
        reply = await self._http.fetch(
            "POST", self._url("generateContent"), data=_body(endpoint, payload)
        )
        if reply.status >= 400:
            raise gemini_failure(reply)
        return UpstreamReply(reply.status, reply.body)

    async def open_stream(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> HttpStream:
        url = self._url("streamGenerateContent") + "?alt=sse"
        stream, failed = await self._http.stream(url, data=_body(endpoint, payload))
        if failed is not None:
            raise gemini_failure(failed)
        assert stream is not None
        return stream

    async def count_tokens(self, payload: dict[str, Any]) -> int:
        """POST :countTokens with the generateContent body as its
        `generateContentRequest` (which names the model), so the system
        instruction and tool declarations are counted too: `{"totalTokens": N}`."""
        request = {**_strip_model(payload), "model": self._model_path}
        data = orjson.dumps({"generateContentRequest": request})
        reply = await self._http.fetch("POST", self._url("countTokens"), data=data)
        if reply.status >= 400:
            raise gemini_failure(reply)
        return token_count(UpstreamReply(reply.status, reply.body), "totalTokens")

    async def probe(self, timeout_s: float) -> ProbeResult:
        """GET {base}/v1beta/models/{model}: the key, the base URL and the model at once."""
        name = self.deployment.name
        url = f"{self.base_url}/v1beta/{self._model_path}"
        timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=min(timeout_s, self.deployment.connect_timeout_s)
        )
        try:
            reply = await self._http.fetch("GET", url, limits=timeout)
        except UpstreamFailure as exc:
            return ProbeResult(name, False, probe_verdict(exc), f"GET {url}: {exc.detail}")
        status = gemini_status(reply)
        body = reply.body[:4096]
        if status in (401, 403):
            return ProbeResult(
                name, False, "bad key", f"GET {url}: check its api_key", status, body
            )
        if status == 404:
            detail = f"'{self.deployment.upstream_model}' is not a model this key can use"
            return ProbeResult(name, False, "model not served", detail, status, body)
        if status >= 400:
            return ProbeResult(name, False, f"HTTP {status}", f"GET {url}", status, body)
        return ProbeResult(name, True, "ok", f"serves '{self.deployment.upstream_model}'", status)


def _body(endpoint: Endpoint, payload: dict[str, Any]) -> bytes:
    if endpoint in (Endpoint.EMBEDDINGS, Endpoint.COMPLETIONS):
        raise UpstreamFailure("protocol", f"a gemini deployment does not serve /{endpoint.value}")
    return orjson.dumps(_strip_model(payload))


def _strip_model(payload: dict[str, Any]) -> dict[str, Any]:
    if "model" in payload:  # the model is in the URL; Gemini refuses unknown fields
        return {k: v for k, v in payload.items() if k != "model"}
    return payload


def _error(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    err = obj.get("error") if isinstance(obj, dict) else None
    return err if isinstance(err, dict) else {}


def gemini_status(reply: Reply) -> int:
    """The status, with a refused key (400 API_KEY_INVALID) as the 401 it means."""
    if reply.status == 400:
        for detail in _details(_error(reply.body)):
            if detail.get("@type") == _ERROR_INFO and detail.get("reason") == "API_KEY_INVALID":
                return 401
    return reply.status


def gemini_failure(reply: Reply) -> UpstreamFailure:
    err = _error(reply.body)
    status = gemini_status(reply)
    word = err.get("status") if isinstance(err.get("status"), str) else ""
    said = f"HTTP {reply.status} {word}".strip()
    return UpstreamFailure(
        "status",
        f"the upstream answered {said}",
        status=status,
        body=reply.body,
        retry_after=retry_after(reply.headers) or _retry_delay(err),
    )


def _details(err: dict[str, Any]) -> list[dict[str, Any]]:
    details = err.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _retry_delay(err: dict[str, Any]) -> str | None:
    """RetryInfo's `retryDelay` ("17s", "0.5s": a protobuf Duration) in whole seconds."""
    for detail in _details(err):
        delay = detail.get("retryDelay")
        if detail.get("@type") == _RETRY_INFO and isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                return None
            if math.isfinite(seconds) and 0 <= seconds < 86400:
                return str(max(1, math.ceil(seconds)))
    return None
