"""What the gateway knows about each deployment right now: requests in flight,
its concurrency limit, observed latency, failures, ejection and the load the
upstream itself reports. One object per deployment, owned by its pool.

The adaptive concurrency limit follows the deployment's health, never one
tenant's requests:

* Latency is normalised by work: a request's time divided by its tokens (one
  per output token, `PROMPT_TOKEN_WORK` per prompt token), so a long prompt or
  a long answer does not look like a slow server. On that figure the limit
  follows a gradient (after Netflix's Gradient2): when the short-term average
  rises past `tolerance` times the long-term one the limit shrinks (at most by
  half a step, smoothed), otherwise it grows by about its square root.
* A failure that looks like overload (a timeout against the deployment's own
  limit, 429, 503, Anthropic's 529: failures.overload_signal) is evidence, not
  a verdict. The limit is halved only when, within the last `WINDOW_S`, at
  least `MIN_FAILURES` such failures came from at
  least `MIN_TENANTS` tenants and make up at least `MIN_FAILURE_SHARE` of the
  tries that ended there; the evidence is then cleared, so each further cut
  needs its own. One tenant's failures, however many, never cut it, and a
  timeout against the request's own deadline is no evidence at all.
* The limit never drops below its floor: the deployment's `adaptive_floor`, by
  default `DEFAULT_FLOOR_SHARE` of its ceiling (max_concurrency), at least 1.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from forebay.config.traffic import ResilienceConfig
from forebay.upstreams.base import Upstream

DEFAULT_CEILING = 1024  # adaptive limit's ceiling when no max_concurrency is set
DEFAULT_FLOOR_SHARE = 0.25
PROMPT_TOKEN_WORK = 0.05  # a prompt token costs a server about 1/20 of an output token
WINDOW_S = 10.0
MIN_FAILURES = 3
MIN_TENANTS = 2
MIN_FAILURE_SHARE = 0.25


def default_floor(ceiling: float) -> float:
    return max(1.0, math.floor(ceiling * DEFAULT_FLOOR_SHARE))


@dataclass
class AdaptiveLimit:
    limit: float
    floor: float = 1.0
    ceiling: float = DEFAULT_CEILING
    tolerance: float = 2.0
    smoothing: float = 0.2
    short: float | None = None
    long: float | None = None
    # (time, tenant, overloaded) of the tries that ended in the last WINDOW_S
    outcomes: deque[tuple[float, str, bool]] = field(default_factory=lambda: deque(maxlen=4096))

    def observe(self, latency_s: float, work: float, tenant: str, now: float) -> None:
        """A try that succeeded: `work` is its tokens, weighted (see the module)."""
        self._note(now, tenant, overloaded=False)
        sample = latency_s / max(work, 1.0)
        self.short = sample if self.short is None else 0.8 * self.short + 0.2 * sample
        self.long = sample if self.long is None else 0.98 * self.long + 0.02 * sample
        gradient = max(0.5, min(1.0, self.tolerance * self.long / max(self.short, 1e-12)))
        target = self.limit * gradient + math.sqrt(self.limit)
        new = (1 - self.smoothing) * self.limit + self.smoothing * target
        self.limit = min(self.ceiling, max(self.floor, new))

    def overloaded(self, tenant: str, now: float) -> bool:
        """A try that failed as an overloaded server fails; True when that cut the limit."""
        self._note(now, tenant, overloaded=True)
        failed = [t for _, t, bad in self.outcomes if bad]
        if (
            len(failed) < MIN_FAILURES
            or len(set(failed)) < MIN_TENANTS
            or len(failed) < MIN_FAILURE_SHARE * len(self.outcomes)
        ):
            return False
        self.limit = max(self.floor, self.limit * 0.5)
        self.outcomes.clear()
        return True

    def _note(self, now: float, tenant: str, *, overloaded: bool) -> None:
        outcomes = self.outcomes
        outcomes.append((now, tenant, overloaded))
        cutoff = now - WINDOW_S
        while outcomes[0][0] < cutoff:
            outcomes.popleft()


@dataclass
class DeploymentState:
    upstream: Upstream
    resilience: ResilienceConfig
    inflight: int = 0
    adaptive: AdaptiveLimit | None = None
    static_limit: int | None = None
    ttft_samples: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    latency_ewma_s: float | None = None
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    cooling_until: float = 0.0  # honouring an upstream 429's Retry-After
    reported_load: float = 0.0  # waiting + running, from the upstream's own metrics
    # The last background health probe (gateway/probes.py): None until one ran
    # (and always for local workers, whose supervisor knows their state).
    probe_ok: bool | None = None
    probe_detail: str = ""

    @classmethod
    def for_upstream(cls, upstream: Upstream, resilience: ResilienceConfig) -> DeploymentState:
        dep = upstream.deployment
        adaptive = None
        if dep.adaptive_concurrency:
            ceiling = float(dep.max_concurrency or DEFAULT_CEILING)
            floor = float(dep.adaptive_floor) if dep.adaptive_floor else default_floor(ceiling)
            adaptive = AdaptiveLimit(limit=ceiling, floor=min(floor, ceiling), ceiling=ceiling)
        return cls(upstream, resilience, adaptive=adaptive, static_limit=dep.max_concurrency)

    @property
    def name(self) -> str:
        return self.upstream.deployment.name

    @property
    def limit(self) -> float:
        if self.adaptive is not None:
            return self.adaptive.limit
        return float(self.static_limit) if self.static_limit else math.inf

    def has_capacity(self, reserved: float = 0.0) -> bool:
        """A free slot, leaving `reserved` (a share of the limit) untouched."""
        limit = self.limit
        if reserved and limit != math.inf:
            limit -= math.floor(reserved * limit)
        return self.inflight < limit

    def available(self, now: float) -> bool:
        return self.upstream.ready() and now >= self.ejected_until and now >= self.cooling_until

    def condition(self, now: float) -> tuple[str, str]:
        """(state, why) for /readyz: ready, not_ready, ejected, cooling_down or
        probe_failed; only `ready` is a deployment that requests go to first."""
        if not self.upstream.ready():
            return "not_ready", "the local worker is starting or restarting"
        if now < self.ejected_until:
            return (
                "ejected",
                f"after consecutive failures, for {self.ejected_until - now:.0f} s more",
            )
        if now < self.cooling_until:
            return "cooling_down", f"rate limited (429), for {self.cooling_until - now:.0f} s more"
        if self.probe_ok is False:
            return "probe_failed", self.probe_detail
        return "ready", self.probe_detail

    def load(self) -> float:
        """In flight here, or what the upstream reports if it knows of more."""
        return max(float(self.inflight), self.reported_load)

    def ttft_p95_s(self) -> float | None:
        if len(self.ttft_samples) < 20:
            return None
        ordered = sorted(self.ttft_samples)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def record_success(
        self,
        ttft_s: float | None,
        latency_s: float,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        tenant: str,
        now: float,
    ) -> None:
        self.consecutive_failures = 0
        first = ttft_s if ttft_s is not None else latency_s
        self.ttft_samples.append(first)
        prev = self.latency_ewma_s
        self.latency_ewma_s = latency_s if prev is None else 0.9 * prev + 0.1 * latency_s
        if self.adaptive is not None:
            work = 1 + completion_tokens + PROMPT_TOKEN_WORK * prompt_tokens
            self.adaptive.observe(latency_s, work, tenant, now)

    def record_overload(self, tenant: str, now: float) -> None:
        """Evidence of overload that is not a failure of the deployment (a 429)."""
        if self.adaptive is not None:
            self.adaptive.overloaded(tenant, now)

    def record_failure(self, *, overload: bool, may_eject: bool, tenant: str, now: float) -> bool:
        """Count a failed try; True when it ejected the deployment."""
        self.consecutive_failures += 1
        if overload:
            self.record_overload(tenant, now)
        r = self.resilience
        if self.consecutive_failures >= r.eject_after_failures and may_eject:
            self.ejections += 1
            self.ejected_until = now + min(r.eject_base_s * self.ejections, r.eject_max_s)
            self.consecutive_failures = 0
            return True
        return False

    def cool_down(self, seconds: float, now: float) -> None:
        self.cooling_until = max(self.cooling_until, now + min(seconds, 60.0))
