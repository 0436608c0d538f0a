"""Stage 6: send the request to a deployment and relay the answer.

Tries happen only before the first byte reaches the client: for a stream the
first upstream chunk is awaited before the response starts, so a deployment
that fails before answering is replaced unseen. Between tries: fully jittered
exponential backoff, and a retry budget (retries in flight at most
`retry_budget_ratio` of the requests in flight, with a floor), so a dead
upstream sees about 1.2x the inbound attempts rather than `max_attempts`x.
Classes with `hedge` send a second try to another deployment once the first
has taken longer than its deployment's p95 time to first byte; the first to
answer wins, the other is cancelled, and both are charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from forebay.config.traffic import ResilienceConfig
from forebay.errors import UpstreamFailure
from forebay.gateway.admission import Lease, Pool, Ticket
from forebay.gateway.failures import as_api_error, short, worth_failover
from forebay.gateway.metering import estimate_prompt_tokens, usage_counts
from forebay.gateway.recorder import Exchange, Recorder
from forebay.gateway.sse import SseRelay, error_event
from forebay.gateway.validate import ParsedRequest
from forebay.upstreams.base import UpstreamReply, UpstreamStream


@dataclass
class Opened:
    """A try that got its first byte: a whole reply, or a stream's first chunk."""

    lease: Lease
    started: float
    ttft_s: float
    reply: UpstreamReply | None = None
    body: dict[str, Any] | None = None
    handle: UpstreamStream | None = None
    chunks: AsyncIterator[bytes] | None = None
    first: bytes = b""

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.release()


def backoff_s(attempt: int, r: ResilienceConfig) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    ceiling = min(r.backoff_cap_ms, r.backoff_base_ms * 2 ** (attempt - 1)) / 1000
    return random.uniform(0, ceiling)


class Dispatcher:
    def __init__(self, recorder: Recorder, resilience: ResilienceConfig) -> None:
        self._recorder = recorder
        self._r = resilience

    async def send(
        self, ex: Exchange, req: ParsedRequest, pool: Pool, ticket: Ticket, *, hedge: bool
    ) -> Response:
        pool.requests_in_flight += 1
        notes: list[str] = []
        attempt = 0
        try:
            while True:
                is_retry = attempt > 0
                try:
                    lease = await pool.acquire(ticket, retry=is_retry)
                    ex.deployment = lease.state.upstream.deployment
                    ex.route_reason = lease.reason(notes)
                    self._recorder.routed(ex)
                    try:
                        opened = await self._open(ex, req, pool, ticket, lease, hedge=hedge)
                    except UpstreamFailure as failure:
                        pool.failed(lease, failure)
                        notes.append(f"{lease.state.name} failed: {short(failure)}")
                        attempt += 1
                        retry = self._may_retry(failure, attempt, pool, ticket, notes)
                        ex.route_reason = lease.reason(notes)
                        if not retry:
                            dep = lease.state.upstream.deployment
                            raise as_api_error(failure, dep.name, dep.api_key) from None
                        ticket = replace(ticket, exclude=ticket.exclude | {lease.state.name})
                        await asyncio.sleep(backoff_s(attempt, self._r))
                        continue
                finally:
                    if is_retry:  # this retry's try is over, whatever its outcome
                        pool.retries_in_flight -= 1
                ex.deployment = opened.lease.state.upstream.deployment
                ex.route_reason = opened.lease.reason(notes + ex.route_notes)
                return self._respond(ex, req, pool, opened)
        finally:
            pool.requests_in_flight -= 1

    def _may_retry(
        self, failure: UpstreamFailure, attempt: int, pool: Pool, ticket: Ticket, notes: list[str]
    ) -> bool:
        if not worth_failover(failure) or attempt >= self._r.max_attempts:
            return False
        if time.monotonic() >= ticket.deadline:
            notes.append("deadline reached")
            return False
        if not pool.available(time.monotonic())[0]:
            return False  # e.g. the only deployment asked us to back off (429)
        # Requests in flight: those in the dispatcher, or holding a slot (streams
        # hold theirs until the last byte), whichever is more.
        active = max(pool.requests_in_flight, pool.active)
        allowed = max(self._r.retry_budget_min, self._r.retry_budget_ratio * active)
        if pool.retries_in_flight >= allowed:
            notes.append("retry budget exhausted")
            return False
        pool.retries_in_flight += 1  # held until the retry's own try ends
        return True

    async def _open(
        self,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        ticket: Ticket,
        lease: Lease,
        *,
        hedge: bool,
    ) -> Opened:
        if not hedge:
            return await self._try(req, lease, ticket)
        primary = asyncio.create_task(self._try(req, lease, ticket))
        delay = lease.state.ttft_p95_s() or ticket.cls.ttft_slo_ms / 1000
        done, _ = await asyncio.wait({primary}, timeout=delay)
        if done:
            return primary.result()
        second = pool.try_acquire(
            replace(ticket, exclude=ticket.exclude | {lease.state.name}), strict_exclude=True
        )
        if second is None:
            return await primary
        secondary = asyncio.create_task(self._try(req, second, ticket))
        leases = {primary: lease, secondary: second}
        pending: set[asyncio.Task[Opened]] = {primary, secondary}
        primary_failure: UpstreamFailure | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        winner = task.result()
                        await self._cancel_losers(ex, req, pool, pending, leases)
                        pending = set()
                        loser = second if winner.lease is lease else lease
                        ex.route_notes.append(
                            f"hedged after {delay * 1000:.0f} ms: {loser.state.name} lost"
                        )
                        if primary_failure is not None:
                            pool.failed(lease, primary_failure)
                        return winner
                    if not isinstance(exc, UpstreamFailure):
                        raise exc
                    if task is primary:
                        primary_failure = exc
                    else:
                        pool.failed(second, exc)
        except BaseException:
            await self._cancel_losers(ex, req, pool, pending, leases)
            raise
        assert primary_failure is not None
        raise primary_failure

    async def _cancel_losers(
        self,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        pending: set[asyncio.Task[Opened]],
        leases: dict[asyncio.Task[Opened], Lease],
    ) -> None:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, UpstreamFailure):
                (await task).discard()  # it got its first byte just as it lost
            loser = leases[task]
            pool.release(loser)
            # The loser's prompt was (at least partly) processed: the tenant pays for it.
            dep = loser.state.upstream.deployment
            ex.extra_cost_usd += estimate_prompt_tokens(req.payload) * dep.usd_per_input_token

    async def _try(self, req: ParsedRequest, lease: Lease, ticket: Ticket) -> Opened:
        dep = lease.state.upstream.deployment
        payload = _upstream_payload(req, dep.upstream_model)
        limit = max(0.001, ticket.deadline - time.monotonic())
        if dep.first_byte_timeout_s is not None:
            limit = min(limit, dep.first_byte_timeout_s)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):  # cheaper than wait_for: no extra task
                return await self._first_byte(req, lease, payload, started)
        except TimeoutError:
            raise UpstreamFailure(
                "timeout", f"no first byte within {limit * 1000:.0f} ms"
            ) from None

    async def _first_byte(
        self, req: ParsedRequest, lease: Lease, payload: dict[str, Any], started: float
    ) -> Opened:
        upstream = lease.state.upstream
        if not req.stream:
            reply = await upstream.complete(req.endpoint, payload)
            try:
                body = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise UpstreamFailure("protocol", "the upstream's answer is not a JSON object")
            return Opened(lease, started, time.perf_counter() - started, reply=reply, body=body)
        handle = await upstream.open_stream(req.endpoint, payload)
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
        return Opened(
            lease, started, time.perf_counter() - started, handle=handle, chunks=chunks, first=first
        )

    def _respond(self, ex: Exchange, req: ParsedRequest, pool: Pool, opened: Opened) -> Response:
        if opened.reply is not None and opened.body is not None:
            return self._complete(ex, req, pool, opened, opened.reply, opened.body)
        assert opened.handle is not None and opened.chunks is not None
        relay = SseRelay(client_wants_usage=req.include_usage)
        return StreamingResponse(
            self._relay(ex, req, pool, opened, relay),
            headers={**_route_headers(ex), "cache-control": "no-cache"},
            media_type="text/event-stream",
        )

    def _complete(
        self,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        opened: Opened,
        reply: UpstreamReply,
        obj: dict[str, Any],
    ) -> Response:
        counts = usage_counts(obj.get("usage"))
        if counts is None:
            ex.prompt_tokens = estimate_prompt_tokens(req.payload)
            ex.completion_tokens = _estimate_completion(obj)
            ex.estimated = True
        else:
            ex.prompt_tokens, ex.completion_tokens = counts
        ex.status = reply.status
        latency = time.perf_counter() - opened.started
        pool.succeeded(opened.lease, None, latency, ex.prompt_tokens + ex.completion_tokens)
        return Response(reply.body, reply.status, _route_headers(ex), media_type="application/json")

    def _record_before_last_bytes(self, ex: Exchange, req: ParsedRequest, relay: SseRelay) -> None:
        """The client is about to get `[DONE]`: record the stream now, so that a
        process killed once the client has it still has its row (spooled). The
        `finally` of `_relay` still records a stream that ends any other way."""
        if ex.recorded:
            return
        if relay.upstream_error is not None:
            ex.fail(502, "upstream_stream_error")
        _count_stream(ex, req, relay)
        self._recorder.finish(ex)

    async def _relay(
        self, ex: Exchange, req: ParsedRequest, pool: Pool, opened: Opened, relay: SseRelay
    ) -> AsyncIterator[bytes]:
        assert opened.handle is not None and opened.chunks is not None
        failure: UpstreamFailure | None = None
        try:
            out = relay.feed(opened.first)
            if out:
                ex.mark_first_token()
                if relay.saw_done:
                    self._record_before_last_bytes(ex, req, relay)
                yield out
            async for chunk in opened.chunks:
                out = relay.feed(chunk)
                if out:
                    ex.mark_first_token()
                    if relay.saw_done:
                        self._record_before_last_bytes(ex, req, relay)
                    yield out
            out = relay.tail()
            if out:
                if relay.saw_done:
                    self._record_before_last_bytes(ex, req, relay)
                yield out
            if relay.upstream_error is not None:
                ex.fail(502, "upstream_stream_error")
        except UpstreamFailure as exc:
            failure = exc
            ex.fail(502 if exc.kind != "timeout" else 504, f"stream_{exc.kind}")
            self._record_before_last_bytes(ex, req, relay)
            yield error_event(
                f"The upstream stream from deployment '{opened.lease.state.name}' failed after "
                f"it started ({exc.detail}); the answer above is incomplete.",
                "upstream_stream_failed",
            )
        except (asyncio.CancelledError, GeneratorExit):
            ex.fail(499, "client_disconnected")
            raise
        finally:
            opened.handle.release()
            _count_stream(ex, req, relay)
            tokens = ex.prompt_tokens + ex.completion_tokens
            if failure is not None:
                pool.failed(opened.lease, failure, tokens=tokens)
            else:
                latency = time.perf_counter() - opened.started
                pool.succeeded(opened.lease, opened.ttft_s, latency, tokens)
            self._recorder.finish(ex)


def _count_stream(ex: Exchange, req: ParsedRequest, relay: SseRelay) -> None:
    if relay.usage is not None:
        ex.prompt_tokens, ex.completion_tokens = relay.usage
    else:
        ex.prompt_tokens = estimate_prompt_tokens(req.payload)
        ex.completion_tokens = relay.content_events
        ex.estimated = True


def _estimate_completion(obj: dict[str, Any]) -> int:
    chars = 0
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        msg = choice.get("message")
        text = msg.get("content") if isinstance(msg, dict) else choice.get("text")
        if isinstance(text, str):
            chars += len(text)
    return chars // 4


def _upstream_payload(req: ParsedRequest, upstream_model: str) -> dict[str, Any]:
    payload = {**req.payload, "model": upstream_model}
    if req.stream:
        # Always ask for usage so the ledger has real counts; the extra chunk
        # is dropped on the way back when the client did not ask for it.
        opts = dict(payload.get("stream_options") or {})
        opts["include_usage"] = True
        payload["stream_options"] = opts
    return payload


def _route_headers(ex: Exchange) -> dict[str, str]:
    return {"x-forebay-route": ex.route_reason or "", "x-request-id": ex.request_id, **ex.headers}
