"""Amazon Bedrock's Converse API as an upstream: POST {base}/model/{modelId}/converse,
/converse-stream (AWS event-stream frames, decoded by the codec) and
/count-tokens (CountTokens), on
https://bedrock-runtime.{region}.amazonaws.com, signed with SigV4 (aws_auth.py).

A transport: it sends the Converse body the codec (protocols/bedrock_converse.py)
made and returns bytes. AWS errors are an HTTP status, an `x-amzn-errortype`
header and `{"message": ...}`; two are re-stated so the gateway's retry rules
read them right: ModelErrorException (424: the model failed on this try) is a
502, worth a retry, and ModelNotReadyException (429) keeps its 429 but gets a
short Retry-After, since AWS sends none. An expired-credentials answer makes
the next request find its credentials again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from forebay.config.settings import AwsSettings, Deployment
from forebay.errors import UpstreamFailure
from forebay.upstreams.aws_auth import AwsAuth
from forebay.upstreams.base import Endpoint, UpstreamReply, WireProtocol, token_count
from forebay.upstreams.http_session import PooledSession, Reply, probe_verdict
from forebay.upstreams.probe import ProbeResult
from forebay.upstreams.retry_hints import retry_after
from forebay.upstreams.stream import HttpStream

EVENT_STREAM = "application/vnd.amazon.eventstream"
_FORGET = frozenset(
    {"ExpiredTokenException", "UnrecognizedClientException", "InvalidSignatureException"}
)
_RESTATED = {"ModelErrorException": 502}
# ConverseTokensRequest's fields (the Bedrock API reference).
_COUNTED = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})
_RETRY_AFTER = {"ModelNotReadyException": "2", "ThrottlingException": "1"}


class BedrockUpstream:
    wire = frozenset({WireProtocol.BEDROCK_CONVERSE})
    strict_chat = False

    def __init__(self, deployment: Deployment, *, base_url: str | None = None) -> None:
        if deployment.aws is None:
            raise ValueError(f"bedrock deployment {deployment.name} has no aws settings")
        aws: AwsSettings = deployment.aws
        self.deployment = deployment
        default = f"https://bedrock-runtime.{aws.region}.amazonaws.com"
        self.base_url = (base_url or deployment.base_url or default).rstrip("/")
        self._auth = AwsAuth(aws, api_key=deployment.api_key)
        self._headers = {"content-type": "application/json", **dict(deployment.headers)}
        self._http = PooledSession(deployment, {})  # every header is signed, so per request
        # A model id, inference profile or ARN: one path segment, ':' and '/' encoded.
        self._model = quote(deployment.upstream_model, safe="")

    def ready(self) -> bool:
        return True

    async def close(self) -> None:
        await self._http.close()

    async def _signed(self, url: str, body: bytes, accept: str) -> dict[str, str]:
        return await self._auth.headers("POST", url, body, {**self._headers, "accept": accept})

    # `headers`: none of a caller's headers means anything to Bedrock (passed_headers.py).
    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamReply:
        url = f"{self.base_url}/model/{self._model}/converse"
        body = _body(endpoint, payload)
        headers = await self._signed(url, body, "application/json")
        reply = await self._http.fetch("POST", url, data=body, headers=headers)
        if reply.status >= 400:
            raise self._failure(reply)
        return UpstreamReply(reply.status, reply.body)

    async def open_stream(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> HttpStream:
        url = f"{self.base_url}/model/{self._model}/converse-stream"
        body = _body(endpoint, payload)
        headers = await self._signed(url, body, EVENT_STREAM)
        stream, failed = await self._http.stream(url, data=body, headers=headers)
        if failed is not None:
            raise self._failure(failed)
        assert stream is not None
        return stream

    async def count_tokens(self, payload: dict[str, Any]) -> int:
        """POST /model/{modelId}/count-tokens (CountTokens) with the Converse
        body's messages, system, toolConfig and additionalModelRequestFields as
        `{"input": {"converse": ...}}`: `{"inputTokens": N}`. Only some models
        count (AWS answers the others 400 ValidationException)."""
        converse = {k: v for k, v in payload.items() if k in _COUNTED}
        url = f"{self.base_url}/model/{self._model}/count-tokens"
        body = orjson.dumps({"input": {"converse": converse}})
        headers = await self._signed(url, body, "application/json")
        reply = await self._http.fetch("POST", url, data=body, headers=headers)
        if reply.status >= 400:
            raise self._failure(reply)
        return token_count(UpstreamReply(reply.status, reply.body), "inputTokens")

    async def probe(self, timeout_s: float) -> ProbeResult:
        """A signed Converse call with no messages: AWS checks the signature, the
        credentials' access to the model and then the body, so a 400
        ValidationException means all is well, at no token cost, and a 403 or
        404 says which part is wrong. It needs only bedrock:InvokeModel."""
        name = self.deployment.name
        url = f"{self.base_url}/model/{self._model}/converse"
        body = b'{"messages":[]}'
        timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=min(timeout_s, self.deployment.connect_timeout_s)
        )
        where = f"POST {url} (signed, no messages)"
        try:
            headers = await self._signed(url, body, "application/json")
            reply = await self._http.fetch("POST", url, data=body, headers=headers, limits=timeout)
        except UpstreamFailure as exc:
            if exc.status is not None:  # no credentials
                return ProbeResult(name, False, "bad key", exc.detail, exc.status)
            return ProbeResult(name, False, probe_verdict(exc), f"{where}: {exc.detail}")
        kind = error_type(reply)
        status = reply.status
        text = reply.body[:4096]
        if status == 400 and kind == "ValidationException":
            detail = f"credentials ({self._auth.mode}) accepted in {self._auth.region}"
            return ProbeResult(name, True, "ok", detail, status)
        if status in (401, 403):
            if kind in _FORGET:
                self._auth.forget()
            detail = f"{where}: {kind or 'refused'}: check the credentials and model access"
            return ProbeResult(name, False, "bad key", detail, status, text)
        if status == 404:
            detail = f"'{self.deployment.upstream_model}' is not a model in {self._auth.region}"
            return ProbeResult(name, False, "model not served", detail, status, text)
        if status >= 400:
            return ProbeResult(name, False, f"HTTP {status}", f"{where}: {kind}", status, text)
        return ProbeResult(name, True, "ok", "reachable", status)

    def _failure(self, reply: Reply) -> UpstreamFailure:
        kind = error_type(reply)
        if kind in _FORGET:
            self._auth.forget()
        said = f"HTTP {reply.status} {kind}".strip()
        return UpstreamFailure(
            "status",
            f"the upstream answered {said}",
            status=_RESTATED.get(kind, reply.status),
            body=reply.body,
            retry_after=retry_after(reply.headers) or _RETRY_AFTER.get(kind),
        )


def error_type(reply: Reply) -> str:
    """AWS's error name: `x-amzn-errortype` ("ThrottlingException:http://..."), else
    the body's `__type`."""
    header = reply.headers.get("x-amzn-errortype", "")
    if header:
        return header.split(":", 1)[0]
    try:
        obj = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return ""
    raw = obj.get("__type") if isinstance(obj, dict) else None
    return raw.rsplit("#", 1)[-1] if isinstance(raw, str) else ""


def _body(endpoint: Endpoint, payload: dict[str, Any]) -> bytes:
    if endpoint in (Endpoint.EMBEDDINGS, Endpoint.COMPLETIONS):
        raise UpstreamFailure("protocol", f"a bedrock deployment does not serve /{endpoint.value}")
    if "model" in payload:  # the model is in the URL; Converse refuses unknown fields
        payload = {k: v for k, v in payload.items() if k != "model"}
    return orjson.dumps(payload)
