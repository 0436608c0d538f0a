"""The simulated inference engine: continuous batching, one step at a time.

Each step the scheduler admits waiting requests while the KV cache and the batch limit
allow, decodes one token for every running sequence, spends the rest of the token budget
on prompt chunks (chunked prefill), asks the planner's performance model how long that
step takes, and sleeps for that long divided by the speed-up. A sequence that cannot grow
its KV cache preempts the youngest running one, which is recomputed later (vLLM's policy).

Time is kept on a simulated clock: a step starts when the previous one ended, or when
its newest request arrived if the engine was idle. Latencies reported per request are
read from that clock, so they do not depend on how busy the host machine is; the sleeps
only pace the output in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from forebay.planner.performance import Replica
from forebay.sim.kv_cache import Allocation, KvCache, block_hashes
from forebay.sim.metrics import SimMetrics


@dataclass(frozen=True)
class TokenEvent:
    index: int  # 0 for the first output token
    at: float  # simulated time the token became available


@dataclass
class SimRequest:
    """One request's progress through the engine."""

    prompt: list[int]
    max_tokens: int
    arrival: float = 0.0
    cached_tokens: int = 0
    computed: int = 0  # context tokens whose KV exists (cached + prefilled + decoded)
    generated: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None
    hashes: list[int] = field(default_factory=list)
    alloc: Allocation | None = None
    events: asyncio.Queue[TokenEvent | None] = field(default_factory=asyncio.Queue)
    queried: bool = False

    @property
    def context(self) -> int:
        return len(self.prompt) + self.generated

    @property
    def prefilling(self) -> bool:
        return self.computed < len(self.prompt) + max(0, self.generated - 1)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.arrival

    @property
    def tpot(self) -> float | None:
        if self.finished_at is None or self.first_token_at is None or self.generated < 2:
            return None
        return (self.finished_at - self.first_token_at) / (self.generated - 1)


class Engine:
    """Runs under `run()` as one asyncio task; `submit` from request handlers."""

    def __init__(
        self,
        replica: Replica,
        metrics: SimMetrics,
        *,
        speedup: float = 1.0,
        kv_cache_tokens: int | None = None,
        block_size: int = 16,
        prefix_caching: bool = True,
    ) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.replica = replica
        self.metrics = metrics
        self.speedup = speedup
        tokens = kv_cache_tokens if kv_cache_tokens is not None else replica.kv_capacity_tokens
        self.kv = KvCache(max(1, tokens // block_size), block_size)
        self.prefix_caching = prefix_caching
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self._wake = asyncio.Event()
        self._t0 = time.monotonic()
        self._last_end = 0.0
        self.steps = 0

    def now(self) -> float:
        """The simulated clock, in seconds since the engine started."""
        return (time.monotonic() - self._t0) * self.speedup

    def submit(self, request: SimRequest) -> SimRequest:
        request.arrival = self.now()
        request.hashes = block_hashes(request.prompt, self.kv.block_size)
        self.waiting.append(request)
        self._publish_gauges()
        self._wake.set()
        return request

    def cancel(self, request: SimRequest) -> None:
        """Drop a request whose client went away."""
        if request in self.waiting:
            self.waiting.remove(request)
        if request in self.running:
            self.running.remove(request)
            if request.alloc:
                self.kv.release(request.alloc)
        self._publish_gauges()

    async def run(self) -> None:
        while True:
            if not self.waiting and not self.running:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._step()

    # -- one step -------------------------------------------------------------------------

    def _admit(self, budget: int) -> None:
        label = self.metrics.model_name
        while self.waiting and len(self.running) < self.replica.max_batch and budget > 0:
            req = self.waiting[0]
            hit = 0
            if self.prefix_caching and req.computed == 0:
                hit = self.kv.match(req.hashes, len(req.prompt))
            alloc = self.kv.admit(req.hashes, hit, req.context + 1)
            if alloc is None:
                break
            self.waiting.popleft()
            req.alloc = alloc
            if req.computed == 0:
                req.cached_tokens = hit * self.kv.block_size
                req.computed = req.cached_tokens
            if not req.queried:
                req.queried = True
                self.metrics.prefix_queries.labels(label).inc(len(req.prompt))
                self.metrics.prefix_hits.labels(label).inc(req.cached_tokens)
            self.running.append(req)
            budget -= req.context - req.computed

    def _preempt_for(self, needy: SimRequest) -> bool:
        """Free the youngest other sequence's blocks; False if there is none."""
        for victim in reversed(self.running):
            if victim is needy:
                continue
            self.running.remove(victim)
            if victim.alloc:
                self.kv.release(victim.alloc)
            victim.alloc = None
            victim.computed = 0  # recompute prompt and generated tokens on readmission
            self.waiting.appendleft(victim)
            self.metrics.preemptions.labels(self.metrics.model_name).inc()
            return True
        return False

    async def _step(self) -> None:
        r = self.replica
        budget = r.prefill_chunk_tokens
        decoding = [q for q in self.running if not q.prefilling]
        budget -= len(decoding)
        self._admit(max(0, budget))
        # Every decoding sequence needs room for the token it is about to produce.
        for req in list(decoding):
            while req.alloc and not self.kv.grow(req.alloc, req.context + 1):
                if not self._preempt_for(req):
                    break
        decoding = [q for q in self.running if not q.prefilling]
        chunks: list[tuple[SimRequest, int]] = []
        budget = r.prefill_chunk_tokens - len(decoding)
        for req in self.running:
            if req.prefilling and budget > 0:
                todo = len(req.prompt) + max(0, req.generated - 1) - req.computed
                chunk = min(todo, budget)
                chunks.append((req, chunk))
                budget -= chunk
        if not decoding and not chunks:
            # Nothing fits (e.g. a prompt larger than the whole cache): fail the head.
            if self.waiting and not self.running:
                stuck = self.waiting.popleft()
                stuck.finished_at = self.now()
                stuck.events.put_nowait(None)
            await asyncio.sleep(0)
            return
        model = r.model
        cost = r.step(
            decode_seqs=len(decoding),
            decode_kv_layer_tokens=sum(model.kv_layer_tokens(q.context) for q in decoding),
            prefill_tokens=sum(n for _, n in chunks),
            prefill_attended_layer_tokens=sum(r.prefill_attended(q.computed, n) for q, n in chunks),
        )
        members = decoding + [q for q, _ in chunks]
        start = max([self._last_end] + [q.arrival for q in members])
        end = start + cost.seconds
        self._last_end = end
        self.steps += 1
        delay = self._t0 + end / self.speedup - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        label = self.metrics.model_name
        for req in decoding:
            req.computed += 1
            self._emit(req, end)
        for req, n in chunks:
            req.computed += n
            if not req.prefilling:
                if req.alloc and req.generated == 0:
                    self.kv.publish(req.alloc, req.hashes)
                    self.metrics.prompt_tokens.labels(label).inc(
                        len(req.prompt) - req.cached_tokens
                    )
                if req.generated == 0:
                    self._emit(req, end)
        self._publish_gauges()

    def _emit(self, req: SimRequest, at: float) -> None:
        label = self.metrics.model_name
        if req.first_token_at is None:
            req.first_token_at = at
            self.metrics.ttft.labels(label).observe(at - req.arrival)
        req.events.put_nowait(TokenEvent(req.generated, at))
        req.generated += 1
        self.metrics.generation_tokens.labels(label).inc()
        if req.generated >= req.max_tokens:
            req.finished_at = at
            if req in self.running:
                self.running.remove(req)
            if req.alloc:
                self.kv.release(req.alloc)
                req.alloc = None
            tpot = req.tpot
            if tpot is not None:
                self.metrics.tpot.labels(label).observe(tpot)
            self.metrics.success.labels(label).inc()
            req.events.put_nowait(None)

    def _publish_gauges(self) -> None:
        label = self.metrics.model_name
        self.metrics.running.labels(label).set(len(self.running))
        self.metrics.waiting.labels(label).set(len(self.waiting))
        self.metrics.cache_usage.labels(label).set(self.kv.usage)


@contextlib.asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[Engine]:
    """Run the engine's loop for the lifetime of the context (an app's lifespan)."""
    task = asyncio.create_task(engine.run(), name="forebay-sim-engine")
    try:
        yield engine
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
