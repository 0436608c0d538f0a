"""Stage 4: admission. One priority queue in front of each alias's pool of
deployments, and a concurrency limit per deployment.

* A request takes a slot at once when a deployment has one and nobody who
  should go first is waiting; otherwise it waits in its class's queue.
* Higher classes are served first; a waiting request gains one priority level
  per `aging_s` waited, so lower classes cannot starve for ever.
* Within a class, tenants share by tokens served (a virtual token counter, as
  in "Fairness in Serving Large Language Models", OSDI '24): the tenant that
  has been served least goes next, and a tenant returning from idle starts at
  the lowest active counter, so it cannot bank credit.
* Shedding is deadline-aware: a request whose expected wait exceeds its class's
  `max_queue_ms` (or deadline) is refused at once with 503 and Retry-After,
  rather than queued to die; when the queue is full the lowest class goes first.
With `admission.enabled: false` the queue is plain FIFO (the benchmark baseline).
* A request that only a deployment speaking its protocol natively can serve
  (`Ticket.native`, set by gateway/hosted.py: a hosted tool, Anthropic's
  container) is given only such deployments, on its first try and on every
  retry, whatever the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from forebay.config.traffic import AdmissionConfig, TrafficClassConfig
from forebay.errors import ForebayError, UpstreamFailure, upstream_error
from forebay.gateway.failures import deployment_at_fault, overload_signal
from forebay.gateway.health import DeploymentState
from forebay.gateway.routing import Pick, Policy, RouteRequest
from forebay.upstreams.base import WireProtocol

RETRY_CLASS = "\x00retry"  # retries go ahead of every class: they were admitted already
_seq = itertools.count()


@dataclass(eq=False)
class Ticket:
    class_name: str
    cls: TrafficClassConfig
    tenant: str
    route: RouteRequest
    deadline: float  # monotonic
    exclude: frozenset[str] = frozenset()
    strict_exclude: bool = False  # never fall back to an excluded deployment
    policy: Policy | None = None  # the class's policy, when it overrides the alias's
    # Only deployments that speak this protocol natively may serve the request,
    # for what `native_for` names (e.g. "tools[0] (web_search tool)").
    native: WireProtocol | None = None
    native_for: str = ""
    enqueued: float = 0.0
    seq: int = field(default_factory=lambda: next(_seq))
    future: asyncio.Future[Lease] | None = None


@dataclass(eq=False)
class Lease:
    state: DeploymentState
    pick: Pick
    notes: tuple[str, ...]
    tenant: str
    released: bool = False

    def reason(self, extra: Sequence[str] = ()) -> str:
        return self.pick.reason([*self.notes, *extra])


def shed_error(message: str, retry_after_s: float) -> ForebayError:
    return upstream_error(
        503, message, code="overloaded", retry_after=max(1, math.ceil(retry_after_s))
    )


class Pool:
    def __init__(
        self,
        alias: str,
        states: Sequence[DeploymentState],
        policy: Policy,
        config: AdmissionConfig,
        clock: Callable[[], float] = time.monotonic,
        on_shed: Callable[[str], None] = lambda _: None,
        on_eject: Callable[[str], None] = lambda _: None,
        top_priority: int = 0,
    ) -> None:
        self._on_eject = on_eject
        self.top_priority = top_priority
        self.alias = alias
        self.states = list(states)
        self.policy = policy
        self._config = config
        self._clock = clock
        self._on_shed = on_shed
        self._queues: dict[str, dict[str, deque[Ticket]]] = {}
        self._priority: dict[str, float] = {RETRY_CLASS: -1.0}
        self._fifo: deque[Ticket] = deque()
        self._vtc: dict[str, float] = {}
        self._completions: deque[float] = deque()
        self.active = 0  # tries holding a slot
        self.requests_in_flight = 0  # requests in the dispatcher (the retry budget's base)
        self.retries_in_flight = 0
        self._ticker: asyncio.Task[None] | None = None

    # -- state ---------------------------------------------------------------
    @property
    def waiting(self) -> int:
        if not self._config.enabled:
            return len(self._fifo)
        return sum(len(q) for tenants in self._queues.values() for q in tenants.values())

    def waiting_by_class(self) -> dict[str, int]:
        return {
            c: sum(len(q) for q in tenants.values())
            for c, tenants in self._queues.items()
            if c != RETRY_CLASS
        }

    def throughput(self) -> float | None:
        """How many requests per second the pool is finishing now: each busy slot
        frees after about its deployment's mean request time. Falls back to the
        completions of the last 10 s before any request time is known."""
        rate = sum(
            s.inflight / s.latency_ewma_s for s in self.states if s.latency_ewma_s and s.inflight
        )
        if rate > 0:
            return rate
        now = self._clock()
        while self._completions and self._completions[0] < now - 10:
            self._completions.popleft()
        if len(self._completions) < 5:
            return None
        span = max(now - self._completions[0], 1.0)
        return len(self._completions) / span

    def available(
        self, now: float, native: WireProtocol | None = None, native_for: str = ""
    ) -> tuple[list[DeploymentState], list[str]]:
        ok, notes = [], []
        probe_failed = 0
        for s in self.states:
            if native is not None and native not in s.upstream.wire:
                notes.append(f"{s.name} skipped: {native_for} needs {native} natively")
            elif s.available(now):
                ok.append(s)
                probe_failed += s.probe_ok is False
            elif not s.upstream.ready():
                notes.append(f"{s.name} skipped: not ready")
            elif now < s.ejected_until:
                notes.append(f"{s.name} skipped: ejected")
            else:
                notes.append(f"{s.name} skipped: cooling down after 429")
        if probe_failed and probe_failed < len(ok):
            # Skip deployments failing their health probe while another passes;
            # when all fail, try them anyway (the probe may be wrong, and the
            # request would fail no later).
            notes.extend(
                f"{s.name} skipped: failed health probe" for s in ok if s.probe_ok is False
            )
            ok = [s for s in ok if s.probe_ok is not False]
        return ok, notes

    def require_available(
        self, now: float, native: WireProtocol | None = None, native_for: str = ""
    ) -> None:
        """Raise the 503 a caller gets when no deployment of the alias can serve
        (none of those that speak `native` natively, when the request needs one)."""
        if not any(
            s.available(now) for s in self.states if native is None or native in s.upstream.wire
        ):
            which = f" that speaks {native} natively (for {native_for})" if native else ""
            raise upstream_error(
                503,
                f"No deployment of model '{self.alias}'{which} is ready right now (a local "
                "model may still be loading, or all are ejected); retry in a few seconds.",
                code="no_deployment_ready",
                retry_after=5,
            )

    # -- acquiring -------------------------------------------------------------
    def try_acquire(self, t: Ticket, *, strict_exclude: bool = False) -> Lease | None:
        """A slot now, or None; never waits (used for hedges and the fast path)."""
        now = self._clock()
        avail, notes = self.available(now, t.native, t.native_for)
        reserved = self._reserved_for(t)
        free = [s for s in avail if s.has_capacity(reserved)]
        cands = [s for s in free if s.name not in t.exclude]
        if not cands and not (strict_exclude or t.strict_exclude):
            cands = free  # nothing else left: retry where it failed
        if not cands:
            return None
        policy = t.policy or self.policy
        pick = policy.choose(cands, t.route)
        if t.policy is not None and t.policy is not self.policy:
            notes = [*notes, f"policy of class {t.class_name}"]
        pick.state.inflight += 1
        self.active += 1
        return Lease(pick.state, pick, tuple(notes), t.tenant)

    async def acquire(self, t: Ticket, *, retry: bool = False) -> Lease:
        now = self._clock()
        self.require_available(now, t.native, t.native_for)
        if retry:
            t.class_name = RETRY_CLASS
        if not self._someone_first(t):
            lease = self.try_acquire(t)
            if lease is not None:
                return lease
        if not retry:
            self._shed_check(t, now)
        return await self._wait(t, now)

    def _reserved_for(self, t: Ticket) -> float:
        """The share of slots this request must leave for the top class."""
        if not self._config.enabled or t.class_name == RETRY_CLASS:
            return 0.0
        if t.cls.priority <= self.top_priority:
            return 0.0
        return self._config.reserved_for_top

    def _someone_first(self, t: Ticket) -> bool:
        if not self._config.enabled:
            return bool(self._fifo)
        mine = self._priority_of(t)
        return any(
            queue and self._priority.get(c, math.inf) <= mine
            for c, tenants in self._queues.items()
            for queue in tenants.values()
        )

    def _priority_of(self, t: Ticket) -> float:
        return -1.0 if t.class_name == RETRY_CLASS else float(t.cls.priority)

    def _shed_check(self, t: Ticket, now: float) -> None:
        budget_s = min(t.cls.max_queue_ms / 1000, t.deadline - now)
        if budget_s <= 0:
            self._shed(t, "its class allows no queueing", 1.0)
        rate = self.throughput()
        if self._config.enabled and rate is not None:
            mine = self._priority_of(t)
            ahead = sum(
                len(q)
                for c, tenants in self._queues.items()
                if self._priority.get(c, math.inf) <= mine
                for q in tenants.values()
            )
            expected = (ahead + 1) / rate
            if expected > budget_s:
                self._shed(
                    t,
                    f"about {expected:.1f} s of queue is ahead of it, over its "
                    f"{budget_s * 1000:.0f} ms allowance",
                    expected,
                )
        if self.waiting >= self._config.max_queue_length:
            victim = self._lowest_below(t) if self._config.enabled else None
            if victim is None:
                self._shed(t, "the queue is full", 1.0)
            else:
                self._evict(victim)

    def _shed(self, t: Ticket, why: str, retry_after_s: float) -> None:
        self._on_shed(t.class_name)
        raise shed_error(
            f"Model '{self.alias}' is overloaded: this {t.class_name} request was not queued "
            f"because {why}. Retry after the Retry-After delay, or use a class with a "
            "longer queue allowance.",
            retry_after_s,
        )

    def _lowest_below(self, t: Ticket) -> Ticket | None:
        mine = self._priority_of(t)
        worst: Ticket | None = None
        for c, tenants in self._queues.items():
            if self._priority.get(c, math.inf) <= mine:
                continue
            for q in tenants.values():
                if q and (
                    worst is None
                    or self._priority[c] > self._priority[worst.class_name]
                    or q[-1].seq > worst.seq
                ):
                    worst = q[-1]
        return worst

    def _evict(self, victim: Ticket) -> None:
        self._remove(victim)
        self._on_shed(victim.class_name)
        if victim.future is not None and not victim.future.done():
            victim.future.set_exception(
                shed_error(
                    f"Model '{self.alias}' is overloaded: this {victim.class_name} request "
                    "gave its place to a higher class. Retry after the Retry-After delay.",
                    1.0,
                )
            )

    async def _wait(self, t: Ticket, now: float) -> Lease:
        t.enqueued = now
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        t.future = future
        self._enqueue(t)
        self._pump()
        self._ensure_ticker()
        limit = min(t.cls.max_queue_ms / 1000, t.deadline - now)
        if t.class_name == RETRY_CLASS:
            limit = max(0.0, t.deadline - now)
        try:
            # A lease, or the shed error of an eviction.
            return await asyncio.wait_for(asyncio.shield(future), max(limit, 0.0))
        except TimeoutError:
            self._remove(t)
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()  # granted at the last moment
            self._on_shed(t.class_name)
            raise shed_error(
                f"Model '{self.alias}' is overloaded: this {t.class_name} request waited "
                f"{limit * 1000:.0f} ms for a slot, its class's limit. Retry later.",
                limit,
            ) from None
        except asyncio.CancelledError:
            self._remove(t)
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())  # the client left just after being granted
            raise

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        """Slots also free up without a release (an ejection ends, a local worker
        comes back): while anyone waits, look again every 100 ms. One task per
        pool, however many requests wait."""
        while self.waiting:
            await asyncio.sleep(0.1)
            self._pump()

    def _enqueue(self, t: Ticket) -> None:
        if not self._config.enabled:
            self._fifo.append(t)
            return
        self._priority.setdefault(t.class_name, float(t.cls.priority))
        tenants = self._queues.setdefault(t.class_name, {})
        if not any(t.tenant in ts and ts[t.tenant] for ts in self._queues.values()):
            # Returning from idle: start level with the least-served active tenant.
            active = [
                self._vtc.get(name, 0.0)
                for ts in self._queues.values()
                for name, q in ts.items()
                if q
            ]
            if active:
                self._vtc[t.tenant] = max(self._vtc.get(t.tenant, 0.0), min(active))
        tenants.setdefault(t.tenant, deque()).append(t)

    def _remove(self, t: Ticket) -> None:
        if not self._config.enabled:
            with contextlib.suppress(ValueError):
                self._fifo.remove(t)
            return
        queue = self._queues.get(t.class_name, {}).get(t.tenant)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(t)

    def _next(self) -> Ticket | None:
        if not self._config.enabled:
            return self._fifo[0] if self._fifo else None
        now = self._clock()
        best_class, best_score = None, math.inf
        for c, tenants in self._queues.items():
            heads = [q[0] for q in tenants.values() if q]
            if not heads:
                continue
            waited = now - min(h.enqueued for h in heads)
            score = self._priority[c] - waited / self._config.aging_s
            if score < best_score:
                best_class, best_score = c, score
        if best_class is None:
            return None
        tenants = self._queues[best_class]
        tenant = min(
            (name for name, q in tenants.items() if q),
            key=lambda name: (self._vtc.get(name, 0.0), tenants[name][0].seq),
        )
        return tenants[tenant][0]

    def _pump(self) -> None:
        while True:
            t = self._next()
            if t is None:
                return
            if t.future is not None and t.future.done():
                self._remove(t)
                continue
            lease = self.try_acquire(t)
            if lease is None:
                return
            self._remove(t)
            assert t.future is not None
            t.future.set_result(lease)

    # -- releasing -------------------------------------------------------------
    def release(self, lease: Lease, *, tokens: float = 0.0) -> None:
        if lease.released:
            return
        lease.released = True
        lease.state.inflight -= 1
        self.active -= 1
        self._completions.append(self._clock())
        if tokens:
            self._vtc[lease.tenant] = self._vtc.get(lease.tenant, 0.0) + tokens
        self._pump()

    def succeeded(
        self,
        lease: Lease,
        ttft_s: float | None,
        latency_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        if not lease.released:
            lease.state.record_success(
                ttft_s,
                latency_s,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                tenant=lease.tenant,
                now=self._clock(),
            )
        self.release(lease, tokens=prompt_tokens + completion_tokens)

    def failed(self, lease: Lease, failure: UpstreamFailure, *, tokens: float = 0.0) -> None:
        if lease.released:
            return
        now = self._clock()
        if failure.status == 429:
            hint = failure.retry_after or ""
            wait = float(hint) if hint.isdigit() else 1.0
            lease.state.cool_down(wait, now)
            lease.state.record_overload(lease.tenant, now)
        elif deployment_at_fault(failure):
            others = [s for s in self.states if s is not lease.state and s.available(now)]
            ejected = lease.state.record_failure(
                overload=overload_signal(failure),
                may_eject=bool(others),
                tenant=lease.tenant,
                now=now,
            )
            if ejected:
                self._on_eject(lease.state.name)
        self.release(lease, tokens=tokens)
