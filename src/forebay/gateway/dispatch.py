"""Stage 5: send the request to the chosen deployment and relay the answer.

Failover happens only before the first byte reaches the client: for a stream,
the first upstream chunk is awaited before the response starts, so a
deployment that dies before answering is replaced by the next one unseen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from forebay.api.errors import ApiError, upstream_error
from forebay.gateway.metering import estimate_prompt_tokens, usage_counts
from forebay.gateway.recorder import Exchange, Recorder
from forebay.gateway.routing import RouteChoice
from forebay.gateway.sse import SseRelay, error_event
from forebay.gateway.validate import ParsedRequest
from forebay.upstreams.base import UpstreamFailure, UpstreamStream

# Upstream statuses that say "this deployment cannot serve now", worth another.
_FAILOVER_STATUSES = frozenset({429, 500, 502, 503, 504})
# Upstream statuses that are about the caller's request; passed back as-is.
_CALLER_STATUSES = frozenset({400, 413, 422})


class Dispatcher:
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def send(
        self, ex: Exchange, req: ParsedRequest, choices: Sequence[RouteChoice]
    ) -> Response:
        failed: list[str] = []
        last: UpstreamFailure | None = None
        for choice in choices:
            dep = choice.upstream.deployment
            ex.deployment = dep
            ex.route_reason = choice.reason(failed)
            payload = _upstream_payload(req, dep.upstream_model)
            try:
                if req.stream:
                    return await self._open_stream(ex, req, choice, payload)
                return await self._complete(ex, req, choice, payload)
            except UpstreamFailure as failure:
                last = failure
                if not _worth_failover(failure):
                    break
                failed.append(f"{dep.name} failed: {_short(failure)}")
        assert last is not None and ex.deployment is not None
        raise _as_api_error(last, ex.deployment.name, ex.deployment.api_key)

    async def _complete(
        self, ex: Exchange, req: ParsedRequest, choice: RouteChoice, payload: dict[str, Any]
    ) -> Response:
        reply = await choice.upstream.complete(ex.endpoint, payload)
        try:
            obj = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise UpstreamFailure("protocol", "the upstream's answer is not JSON") from None
        counts = usage_counts(obj.get("usage")) if isinstance(obj, dict) else None
        if counts is None:
            ex.prompt_tokens = estimate_prompt_tokens(req.payload)
            ex.completion_tokens = _estimate_completion(obj)
            ex.estimated = True
        else:
            ex.prompt_tokens, ex.completion_tokens = counts
        ex.status = reply.status
        return Response(reply.body, reply.status, _route_headers(ex), media_type="application/json")

    async def _open_stream(
        self, ex: Exchange, req: ParsedRequest, choice: RouteChoice, payload: dict[str, Any]
    ) -> Response:
        handle = await choice.upstream.open_stream(ex.endpoint, payload)
        chunks = handle.chunks()
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            handle.release()
            raise UpstreamFailure(
                "protocol", "the upstream closed the stream without a byte"
            ) from None
        except BaseException:
            handle.release()
            raise
        relay = SseRelay(client_wants_usage=req.include_usage)
        return StreamingResponse(
            self._relay(ex, req, handle, chunks, first, relay),
            headers={**_route_headers(ex), "cache-control": "no-cache"},
            media_type="text/event-stream",
        )

    async def _relay(
        self,
        ex: Exchange,
        req: ParsedRequest,
        handle: UpstreamStream,
        chunks: AsyncIterator[bytes],
        first: bytes,
        relay: SseRelay,
    ) -> AsyncIterator[bytes]:
        try:
            out = relay.feed(first)
            if out:
                ex.mark_first_token()
                yield out
            async for chunk in chunks:
                out = relay.feed(chunk)
                if out:
                    ex.mark_first_token()
                    yield out
            out = relay.tail()
            if out:
                yield out
            if relay.upstream_error is not None:
                ex.fail(502, "upstream_stream_error")
        except UpstreamFailure as failure:
            ex.fail(502 if failure.kind != "timeout" else 504, f"stream_{failure.kind}")
            yield error_event(
                f"The upstream stream from deployment '{_name(ex)}' "
                f"failed after it started ({failure.detail}); the answer above is incomplete.",
                "upstream_stream_failed",
            )
        except (asyncio.CancelledError, GeneratorExit):
            ex.fail(499, "client_disconnected")
            raise
        finally:
            handle.release()
            if relay.usage is not None:
                ex.prompt_tokens, ex.completion_tokens = relay.usage
            else:
                ex.prompt_tokens = estimate_prompt_tokens(req.payload)
                ex.completion_tokens = relay.content_events
                ex.estimated = True
            self._recorder.finish(ex)


def _upstream_payload(req: ParsedRequest, upstream_model: str) -> dict[str, Any]:
    payload = {**req.payload, "model": upstream_model}
    if req.stream:
        # Always ask for usage so the ledger has real counts; the extra chunk
        # is dropped on the way back when the client did not ask for it.
        opts = dict(payload.get("stream_options") or {})
        opts["include_usage"] = True
        payload["stream_options"] = opts
    return payload


def _name(ex: Exchange) -> str:
    return ex.deployment.name if ex.deployment else "?"


def _route_headers(ex: Exchange) -> dict[str, str]:
    return {"x-forebay-route": ex.route_reason or "", "x-request-id": ex.request_id, **ex.headers}


def _estimate_completion(obj: Any) -> int:
    if not isinstance(obj, dict):
        return 0
    chars = 0
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        msg = choice.get("message")
        text = msg.get("content") if isinstance(msg, dict) else choice.get("text")
        if isinstance(text, str):
            chars += len(text)
    return chars // 4


def _worth_failover(failure: UpstreamFailure) -> bool:
    if failure.kind in ("connect", "unavailable", "protocol"):
        return True
    return failure.kind == "status" and failure.status in _FAILOVER_STATUSES


def _short(failure: UpstreamFailure) -> str:
    return f"HTTP {failure.status}" if failure.status else failure.kind


def _as_api_error(failure: UpstreamFailure, deployment: str, secret: str | None) -> ApiError:
    if failure.kind == "status" and failure.status in _CALLER_STATUSES:
        body = failure.body
        if secret and secret.encode() in body:
            body = body.replace(secret.encode(), b"[redacted]")
        message = (
            _upstream_message(body) or f"the upstream rejected the request (HTTP {failure.status})"
        )
        return ApiError(failure.status, message, code="upstream_rejected_request")
    if failure.kind == "status" and failure.status == 429:
        retry = failure.retry_after or ""
        retry = retry if retry.isdigit() else "1"
        return ApiError(
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


def _upstream_message(body: bytes) -> str | None:
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


def error_type_for(err: ApiError) -> str:
    return err.code or err.type
