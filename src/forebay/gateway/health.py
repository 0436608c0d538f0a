"""What the gateway knows about each deployment right now: requests in flight,
its concurrency limit, observed latency, failures, ejection and the load the
upstream itself reports. One object per deployment, owned by its pool."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from forebay.config.traffic import ResilienceConfig
from forebay.upstreams.base import Upstream

DEFAULT_CEILING = 1024  # adaptive limit's ceiling when no max_concurrency is set


@dataclass
class AdaptiveLimit:
    """Gradient-style concurrency limit (after Netflix's Gradient2): compare a
    short-term latency average with a long-term one; when the short one rises
    past `tolerance` times the long one the limit shrinks (at most halving),
    otherwise it grows by about its square root, smoothed."""

    limit: float
    floor: float = 1.0
    ceiling: float = DEFAULT_CEILING
    tolerance: float = 2.0
    smoothing: float = 0.2
    short: float | None = None
    long: float | None = None

    def observe(self, latency_s: float) -> None:
        self.short = latency_s if self.short is None else 0.8 * self.short + 0.2 * latency_s
        self.long = latency_s if self.long is None else 0.98 * self.long + 0.02 * latency_s
        gradient = max(0.5, min(1.0, self.tolerance * self.long / max(self.short, 1e-9)))
        target = self.limit * gradient + math.sqrt(self.limit)
        new = (1 - self.smoothing) * self.limit + self.smoothing * target
        self.limit = min(self.ceiling, max(self.floor, new))

    def penalise(self) -> None:
        """A failure that looks like overload (timeout, 429, 503) halves the limit."""
        self.limit = max(self.floor, self.limit * 0.5)


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
            adaptive = AdaptiveLimit(limit=ceiling, ceiling=ceiling)
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

    def record_success(self, ttft_s: float | None, latency_s: float) -> None:
        self.consecutive_failures = 0
        first = ttft_s if ttft_s is not None else latency_s
        self.ttft_samples.append(first)
        prev = self.latency_ewma_s
        self.latency_ewma_s = latency_s if prev is None else 0.9 * prev + 0.1 * latency_s
        if self.adaptive is not None:
            self.adaptive.observe(first)

    def record_failure(self, *, overload: bool, may_eject: bool, now: float) -> bool:
        """Count a failed try; True when it ejected the deployment."""
        self.consecutive_failures += 1
        if overload and self.adaptive is not None:
            self.adaptive.penalise()
        r = self.resilience
        if self.consecutive_failures >= r.eject_after_failures and may_eject:
            self.ejections += 1
            self.ejected_until = now + min(r.eject_base_s * self.ejections, r.eject_max_s)
            self.consecutive_failures = 0
            return True
        return False

    def cool_down(self, seconds: float, now: float) -> None:
        self.cooling_until = max(self.cooling_until, now + min(seconds, 60.0))
