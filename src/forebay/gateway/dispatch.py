"""Stage 6: send the request to a deployment and relay the answer.

Tries happen only before the first byte reaches the client: for a stream the
first upstream chunk is awaited before the response starts, so a deployment
that fails before answering is replaced unseen. Between tries: fully jittered
exponential backoff, and a retry budget (retries in flight at most
`retry_budget_ratio` of the requests in flight, with a floor), so a dead
upstream sees about 1.2x the inbound attempts rather than `max_attempts`x.
Which failures are retried, and where, is failures.py's rule.
Classes with `hedge` send a second try to another deployment once the first
has taken longer than its deployment's p95 time to first byte; the first to
answer wins, the other is cancelled, and both are charged.

Everything a request takes is given back on every path, whatever is raised
(an upstream failure, a bug, a cancellation): `send` keeps every slot it took
and a `finally` releases those the response did not take over; a hedge's
`finally` stops every try that did not win; a stream's slot, connection and
record belong to its `_Relay`, closed by the response however it ends (the last
byte, an error, the client leaving, or the body never being read at all).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from forebay.config.traffic import ResilienceConfig
from forebay.errors import UpstreamFailure
from forebay.gateway.admission import Lease, Pool, Ticket
from forebay.gateway.failures import Retry, as_api_error, retry_rule, short
from forebay.gateway.metering import estimate_prompt_tokens, usage_counts
from forebay.gateway.recorder import Exchange, Recorder
from forebay.gateway.redact import Redactor
from forebay.gateway.responses import prompt_body
from forebay.gateway.sse import SseRelay
from forebay.gateway.translate import (
    PassThroughRelay,
    StreamRelay,
    TranslatingRelay,
    Translation,
    dropped_params,
    encode_for,
    reply_bytes,
    translation,
)
from forebay.gateway.validate import ParsedRequest
from forebay.protocols.canonical import GenReply
from forebay.protocols.openai_chat_reasoning import strip_signed_history
from forebay.protocols.option_policy import DROPPED_HEADER
from forebay.upstreams.base import Endpoint, UpstreamReply, UpstreamStream, WireProtocol

log = logging.getLogger("forebay")
# Why a relay that set `torn` before the upstream's end stopped.
GARBLED = "the upstream sent an event whose data is not a JSON object"


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
    sse: StreamRelay | None = None
    first: bytes = b""  # the first whole events, ready for the client
    translated: Translation | None = None  # the deployment speaks another protocol
    decoded: GenReply | None = None  # a translated whole reply, decoded

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.release()


def backoff_s(attempt: int, r: ResilienceConfig) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    ceiling = min(r.backoff_cap_ms, r.backoff_base_ms * 2 ** (attempt - 1)) / 1000
    return random.uniform(0, ceiling)


class Dispatcher:
    def __init__(
        self, recorder: Recorder, resilience: ResilienceConfig, redactor: Redactor
    ) -> None:
        self._recorder = recorder
        self._r = resilience
        self._redactor = redactor

    async def send(
        self, ex: Exchange, req: ParsedRequest, pool: Pool, ticket: Ticket, *, hedge: bool
    ) -> Response:
        pool.requests_in_flight += 1
        leases: list[Lease] = []  # every slot this request took (a hedge adds its own)
        kept: Lease | None = None  # the one the response took over
        holds_retry = False  # a retry-budget count, held until the retry's try ends
        notes: list[str] = []
        attempt = 0
        try:
            while True:
                lease = await pool.acquire(ticket, retry=attempt > 0)
                leases.append(lease)
                ex.deployment = lease.state.upstream.deployment
                ex.route_reason = lease.reason(notes)
                self._recorder.routed(ex)  # spooled: a crash from here on names the deployment
                failed: UpstreamFailure | None = None
                try:
                    opened = await self._open(ex, req, pool, ticket, lease, leases, hedge=hedge)
                except UpstreamFailure as failure:
                    failed = failure
                finally:
                    if holds_retry:  # this retry's try is over, whatever its outcome
                        pool.retries_in_flight -= 1
                        holds_retry = False
                if failed is not None:
                    pool.failed(lease, failed)
                    notes.append(f"{lease.state.name} failed: {short(failed)}")
                    attempt += 1
                    rule = retry_rule(failed)
                    holds_retry = self._may_retry(rule, attempt, pool, ticket, lease, notes)
                    ex.route_reason = lease.reason(notes)
                    if not holds_retry:
                        dep = lease.state.upstream.deployment
                        raise as_api_error(failed, dep, req.endpoint, self._redactor)
                    ticket = replace(
                        ticket,
                        exclude=ticket.exclude | {lease.state.name},
                        strict_exclude=ticket.strict_exclude or rule is Retry.ELSEWHERE,
                    )
                    await asyncio.sleep(backoff_s(attempt, self._r))
                    continue
                ex.deployment = opened.lease.state.upstream.deployment
                ex.route_reason = opened.lease.reason(notes + ex.route_notes)
                try:
                    response = self._respond(ex, req, pool, opened)
                except BaseException:
                    opened.discard()
                    raise
                kept = opened.lease
                return response
        finally:
            pool.requests_in_flight -= 1
            if holds_retry:
                pool.retries_in_flight -= 1
            for lease in leases:
                if lease is not kept:
                    pool.release(lease)  # a no-op for those already given back

    def _may_retry(
        self,
        rule: Retry,
        attempt: int,
        pool: Pool,
        ticket: Ticket,
        failed: Lease,
        notes: list[str],
    ) -> bool:
        """Whether to try again; True takes a retry-budget count (the caller gives it back)."""
        if rule is Retry.NO or attempt >= self._r.max_attempts:
            return False
        now = time.monotonic()
        if now >= ticket.deadline:
            notes.append("deadline reached")
            return False
        # Only those the request may go to: a hosted tool's stay native (hosted.py).
        available = pool.available(now, ticket.native, ticket.native_for)[0]
        if not available:
            return False  # e.g. the only deployment asked us to back off (429)
        if rule is Retry.ELSEWHERE:
            tried = ticket.exclude | {failed.state.name}
            if all(s.name in tried for s in available):
                native = f" that speaks {ticket.native} natively" if ticket.native else ""
                notes.append(f"no other deployment{native} to try")
                return False
        # Requests in flight: those in the dispatcher, or holding a slot (streams
        # hold theirs until the last byte), whichever is more.
        active = max(pool.requests_in_flight, pool.active)
        allowed = max(self._r.retry_budget_min, self._r.retry_budget_ratio * active)
        if pool.retries_in_flight >= allowed:
            notes.append("retry budget exhausted")
            return False
        pool.retries_in_flight += 1
        return True

    async def _open(
        self,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        ticket: Ticket,
        lease: Lease,
        leases: list[Lease],
        *,
        hedge: bool,
    ) -> Opened:
        if not hedge:
            return await self._try(req, lease, ticket)
        return await self._hedged(ex, req, pool, ticket, lease, leases)

    async def _hedged(
        self,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        ticket: Ticket,
        lease: Lease,
        leases: list[Lease],
    ) -> Opened:
        primary = asyncio.create_task(self._try(req, lease, ticket))
        tries: dict[asyncio.Task[Opened], Lease] = {primary: lease}
        winner: Opened | None = None
        try:
            delay = lease.state.ttft_p95_s() or ticket.cls.ttft_slo_ms / 1000
            done, _ = await asyncio.wait({primary}, timeout=delay)
            if done:
                winner = primary.result()
                return winner
            second = pool.try_acquire(
                replace(ticket, exclude=ticket.exclude | {lease.state.name}), strict_exclude=True
            )
            if second is None:
                winner = await primary
                return winner
            leases.append(second)
            secondary = asyncio.create_task(self._try(req, second, ticket))
            tries[secondary] = second
            pending: set[asyncio.Task[Opened]] = {primary, secondary}
            primary_failure: UpstreamFailure | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: t is not primary):
                    exc = task.exception()
                    if exc is None:
                        winner = task.result()
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
            assert primary_failure is not None
            raise primary_failure
        finally:
            self._stop_losers(ex, req, pool, tries, winner)

    def _stop_losers(
        self,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        tries: dict[asyncio.Task[Opened], Lease],
        winner: Opened | None,
    ) -> None:
        """Cancel every try but the winner, close what it opened, give its slot back.
        Synchronous, so that nothing (not even a second cancellation) interrupts it."""
        for task, lease in tries.items():
            if winner is not None and winner.lease is lease:
                continue
            if task.done():
                _discard_result(task)
            else:
                task.cancel()
                task.add_done_callback(_discard_result)
            if winner is not None and not lease.released:
                # The loser's prompt was (at least partly) processed: the tenant pays for it.
                dep = lease.state.upstream.deployment
                ex.extra_cost_usd += (
                    estimate_prompt_tokens(prompt_body(req)) * dep.usd_per_input_token
                )
            pool.release(lease)

    async def _try(self, req: ParsedRequest, lease: Lease, ticket: Ticket) -> Opened:
        upstream = lease.state.upstream
        dep = upstream.deployment
        if req.protocol in upstream.wire and req.verbatim:  # the bytes go through untouched
            plan = None
            endpoint = req.endpoint
            payload = _upstream_payload(req, dep.upstream_model)
        else:
            plan = translation(req.protocol, req.endpoint, upstream.wire, req.inbound)
            endpoint = plan.endpoint
            if req.canonical is None:
                req.canonical = plan.inbound.decode_request(req.payload)
            payload = encode_for(plan, req.canonical, dep.upstream_model)
            if upstream.strict_chat and plan.outbound.name == WireProtocol.OPENAI_CHAT:
                strip_signed_history(payload)
        limit = max(0.001, ticket.deadline - time.monotonic())
        own_limit = dep.first_byte_timeout_s is not None and dep.first_byte_timeout_s < limit
        if own_limit:
            assert dep.first_byte_timeout_s is not None
            limit = dep.first_byte_timeout_s
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):  # cheaper than wait_for: no extra task
                return await self._first_byte(req, lease, endpoint, payload, plan, started)
        except TimeoutError:
            if own_limit:
                raise UpstreamFailure(
                    "timeout", f"no first byte within its {limit * 1000:.0f} ms limit"
                ) from None
            raise UpstreamFailure(
                "deadline", f"no first byte within the request's deadline ({limit * 1000:.0f} ms)"
            ) from None

    async def _first_byte(
        self,
        req: ParsedRequest,
        lease: Lease,
        endpoint: Endpoint,
        payload: dict[str, Any],
        plan: Translation | None,
        started: float,
    ) -> Opened:
        upstream = lease.state.upstream
        if not req.stream:
            reply = await upstream.complete(endpoint, payload, req.headers)
            try:
                body = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise UpstreamFailure("protocol", "the upstream's answer is not a JSON object")
            opened = Opened(lease, started, time.perf_counter() - started, reply=reply, body=body)
            if plan is not None:  # decoded now, so that a garbled reply can be retried
                opened.translated = plan
                opened.decoded = plan.outbound.decode_reply(body)
                # A wire without a model name (Bedrock Converse): the deployment's.
                opened.decoded.model = opened.decoded.model or upstream.deployment.upstream_model
            return opened
        handle = await upstream.open_stream(endpoint, payload, req.headers)
        chunks = handle.chunks()
        sse: StreamRelay
        if plan is not None:
            sse = TranslatingRelay(
                plan,
                include_usage=req.include_usage,
                redactor=self._redactor,
                model=upstream.deployment.upstream_model,
            )
        elif req.protocol is WireProtocol.OPENAI_CHAT:
            sse = SseRelay(client_wants_usage=req.include_usage, redactor=self._redactor)
        else:
            sse = PassThroughRelay(req.protocol, redactor=self._redactor)
        try:
            # Until a whole event has come, nothing is committed: a stream that
            # breaks before one can still be tried elsewhere.
            first = b""
            async for chunk in chunks:
                first = sse.feed(chunk)
                if first or sse.torn:
                    break
            else:
                first = sse.tail()
                if not first:
                    raise UpstreamFailure(
                        "protocol", "the upstream ended the stream before a whole event"
                    )
            if not first:
                raise UpstreamFailure("protocol", GARBLED)
        except BaseException:
            handle.release()
            raise
        ttft = time.perf_counter() - started
        return Opened(
            lease,
            started,
            ttft,
            handle=handle,
            chunks=chunks,
            sse=sse,
            first=first,
            translated=plan,
        )

    def _respond(self, ex: Exchange, req: ParsedRequest, pool: Pool, opened: Opened) -> Response:
        if opened.translated is not None and req.canonical is not None:
            model = opened.lease.state.upstream.deployment.upstream_model
            dropped = dropped_params(opened.translated, req.canonical, model)
            if dropped:
                ex.headers[DROPPED_HEADER] = dropped
        if opened.reply is not None and opened.body is not None:
            return self._complete(ex, req, pool, opened, opened.reply, opened.body)
        relay = _Relay(self._recorder, ex, req, pool, opened)
        return _RelayResponse(relay, {**_route_headers(ex), "cache-control": "no-cache"})

    def _complete(
        self,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        opened: Opened,
        reply: UpstreamReply,
        obj: dict[str, Any],
    ) -> Response:
        decoded = opened.decoded
        if decoded is not None:
            _count_translated(ex, req, decoded)
        else:
            counts = usage_counts(obj.get("usage"))
            if counts is None:
                ex.prompt_tokens = estimate_prompt_tokens(prompt_body(req))
                ex.completion_tokens = _estimate_completion(obj)
                ex.estimated = True
            else:
                ex.count(counts)
        ex.status = reply.status
        latency = time.perf_counter() - opened.started
        pool.succeeded(opened.lease, None, latency, ex.prompt_tokens, ex.completion_tokens)
        raw = reply.body
        if decoded is not None:
            assert opened.translated is not None
            raw = reply_bytes(opened.translated, decoded)
        body = self._redactor.redact(raw)
        return Response(body, reply.status, _route_headers(ex), media_type="application/json")


class _Relay:
    """A stream that has started: it owns the try's slot, the upstream
    connection and the request's record until `close`, which runs once."""

    def __init__(
        self,
        recorder: Recorder,
        ex: Exchange,
        req: ParsedRequest,
        pool: Pool,
        opened: Opened,
    ) -> None:
        self._recorder = recorder
        self._ex = ex
        self._req = req
        self._pool = pool
        self._opened = opened
        assert opened.sse is not None
        self._sse = opened.sse
        if opened.translated is not None and isinstance(opened.sse, TranslatingRelay):
            opened.sse.commit()  # the winner: what it answers may be kept
        self._failure: UpstreamFailure | None = None
        self._finished = False
        self._closed = False

    async def body(self) -> AsyncIterator[bytes]:
        ex, sse, opened = self._ex, self._sse, self._opened
        assert opened.chunks is not None
        try:
            try:
                ex.mark_first_token()
                if sse.saw_done:
                    self._record_before_last_bytes()
                yield opened.first
                garbled = sse.torn  # a garbled event ends the relay (PassThroughRelay)
                if not garbled:
                    async for chunk in opened.chunks:
                        out = sse.feed(chunk)
                        if out:
                            ex.mark_first_token()
                            if sse.saw_done:
                                self._record_before_last_bytes()
                            yield out
                        if sse.torn:
                            garbled = True
                            break
                out = sse.tail()
                if out:
                    if sse.saw_done:
                        self._record_before_last_bytes()
                    yield out
                if sse.torn:
                    why = GARBLED if garbled else "the stream ended in the middle of an event"
                    raise UpstreamFailure("protocol", why)
                if sse.upstream_error is not None:
                    ex.fail(502, "upstream_stream_error")
                self._finished = True
            except UpstreamFailure as exc:
                self._failure = exc
                timed_out = exc.kind in ("timeout", "deadline")
                ex.fail(504 if timed_out else 502, f"stream_{exc.kind}")
                self._record_before_last_bytes()
                yield sse.error_event(
                    f"The upstream stream from deployment '{opened.lease.state.name}' failed "
                    f"after it started ({exc.detail}); the answer above is incomplete.",
                    "upstream_stream_failed",
                )
            except Exception:
                log.exception("request %s: relaying the stream failed", ex.request_id)
                ex.fail(500, "internal_error")
                self._record_before_last_bytes()
                yield sse.error_event(
                    f"Forebay failed while relaying this stream (an internal error, logged "
                    f"under request id {ex.request_id}); the answer above is incomplete.",
                    "internal_error",
                )
        finally:
            self.close()

    def _record_before_last_bytes(self) -> None:
        """The client is about to get the stream's last event (`[DONE]` or an error
        event): record the stream now, so that a process killed once the client has
        it still has its row (spooled). `close` records a stream that ends otherwise."""
        ex = self._ex
        if ex.recorded:
            return
        if self._sse.upstream_error is not None and ex.error_type is None:
            ex.fail(502, "upstream_stream_error")
        self._count()
        self._recorder.finish(ex)

    def _count(self) -> None:
        ex = self._ex
        if self._sse.usage is not None:
            ex.count(self._sse.usage)
        else:
            ex.prompt_tokens = estimate_prompt_tokens(prompt_body(self._req))
            ex.completion_tokens = self._sse.content_events
            ex.estimated = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ex, opened = self._ex, self._opened
        assert opened.handle is not None
        opened.handle.release()
        if not self._finished and ex.error_type is None:
            ex.fail(499, "client_disconnected")  # it left, or never read the body at all
        self._count()
        tokens = ex.prompt_tokens + ex.completion_tokens
        if self._failure is not None:
            self._pool.failed(opened.lease, self._failure, tokens=tokens)
        elif self._finished:
            latency = time.perf_counter() - opened.started
            self._pool.succeeded(
                opened.lease, opened.ttft_s, latency, ex.prompt_tokens, ex.completion_tokens
            )
        else:  # cut short by the client: says nothing about the deployment
            self._pool.release(opened.lease, tokens=tokens)
        self._recorder.finish(ex)


class _RelayResponse(StreamingResponse):
    """A streamed answer that closes its relay however the response ends."""

    def __init__(self, relay: _Relay, headers: dict[str, str]) -> None:
        super().__init__(relay.body(), headers=headers, media_type="text/event-stream")
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._relay.close()


def _discard_result(task: asyncio.Task[Opened]) -> None:
    """Close what a stopped try opened; retrieve its exception so none is logged."""
    if task.cancelled():
        return
    if task.exception() is None:
        task.result().discard()


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


def _count_translated(ex: Exchange, req: ParsedRequest, reply: GenReply) -> None:
    if reply.usage is None:
        ex.prompt_tokens = estimate_prompt_tokens(prompt_body(req))
        ex.completion_tokens = sum(len(getattr(p, "text", "")) for p in reply.parts) // 4
        ex.estimated = True
        return
    ex.count(reply.usage)


def _upstream_payload(req: ParsedRequest, upstream_model: str) -> dict[str, Any]:
    payload = {**req.payload, "model": upstream_model}
    if req.stream and req.protocol is WireProtocol.OPENAI_CHAT:
        # Always ask for usage so the ledger has real counts; the extra chunk
        # is dropped on the way back when the client did not ask for it.
        opts = dict(payload.get("stream_options") or {})
        opts["include_usage"] = True
        payload["stream_options"] = opts
    return payload


def _route_headers(ex: Exchange) -> dict[str, str]:
    return {"x-forebay-route": ex.route_reason or "", "x-request-id": ex.request_id, **ex.headers}
