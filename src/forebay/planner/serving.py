"""A replica under load: continuous batching, queueing at the SLO percentile, and the
highest request rate that still meets the SLOs.

Steady state with chunked prefill: at arrival rate `lam` (requests/s) each step of length
`t` decodes the `B` running sequences and prefills the `lam * t * P` prompt tokens that
arrived meanwhile; Little's law gives `B = lam * (TTFT + D * t)`. Both are solved by fixed
point iteration. Tails use two standard results:

* the running batch is Poisson distributed (M/G/infinity), so the p99 time per output
  token is the step time at `B + 2.33 sqrt(B)`;
* waiting for admission is approximated by an M/D/1 queue whose server is the whole
  replica at its capacity `mu` (requests/s at the largest batch): P(wait > x) ~
  rho * exp(-2 mu (1 - rho) x), so the p99 wait is ln(100 rho) / (2 mu (1 - rho)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forebay.planner.performance import Replica, StepCost, p99_occupancy


@dataclass(frozen=True)
class Workload:
    """Token counts of the traffic: means drive throughput, p99s drive tail latency."""

    prompt_mean: float
    output_mean: float
    prompt_p99: float | None = None

    def __post_init__(self) -> None:
        if self.prompt_mean < 1 or self.output_mean < 1:
            raise ValueError("prompt and output token means must be at least 1")

    @property
    def mean_context(self) -> float:
        """Average context of a running sequence: its prompt plus half its output."""
        return self.prompt_mean + self.output_mean / 2

    @property
    def prompt_tail(self) -> float:
        return self.prompt_p99 or self.prompt_mean


@dataclass(frozen=True)
class OperatingPoint:
    """A replica's state at one arrival rate."""

    rate_rps: float
    batch: float
    step: StepCost
    ttft_p99_s: float
    tpot_mean_s: float
    tpot_p99_s: float
    utilization: float
    power_w: float | None

    @property
    def output_tokens_per_s(self) -> float:
        return self.batch / self.step.seconds if self.step.seconds else 0.0


@dataclass(frozen=True)
class Capacity:
    """Offline (unconstrained) limits of a replica for a workload."""

    batch: int
    kv_limited: bool
    step: StepCost
    output_tokens_per_s: float
    requests_per_s: float


def _loaded_step(replica: Replica, wl: Workload, batch: float, rate: float) -> StepCost | None:
    """Step time with `batch` decoding while prompts arrive at `rate`; None if it diverges."""
    per_prompt = replica.prefill_attended(0, wl.prompt_mean)
    kv = batch * replica.model.kv_layer_tokens(wl.mean_context)
    t = replica.step(batch, kv).seconds
    for _ in range(60):
        arrivals = rate * t
        cost = replica.step(batch, kv, arrivals * wl.prompt_mean, arrivals * per_prompt)
        if cost.seconds > 3600:
            return None
        if abs(cost.seconds - t) <= 1e-9 * max(t, 1e-9):
            return cost
        t = cost.seconds
    return cost if cost.seconds < 10 * t else None


def capacity(replica: Replica, wl: Workload) -> Capacity:
    """Offline throughput: the largest batch, with prefill amortised over the outputs."""
    batch, kv_limited = replica.batch_cap(wl.mean_context)
    if batch < 1:
        return Capacity(0, True, replica.step(), 0.0, 0.0)
    per_prompt = replica.prefill_attended(0, wl.prompt_mean)
    share = batch / wl.output_mean  # prompts admitted per step in steady state
    step = replica.step(
        batch,
        batch * replica.model.kv_layer_tokens(wl.mean_context),
        share * wl.prompt_mean,
        share * per_prompt,
    )
    tokens_per_s = batch / step.seconds
    return Capacity(batch, kv_limited, step, tokens_per_s, tokens_per_s / wl.output_mean)


def _prefill_latency(replica: Replica, wl: Workload, batch: float, base: StepCost) -> float:
    """Time to prefill a p99-long prompt in chunks while `batch` others keep decoding."""
    kv = batch * replica.model.kv_layer_tokens(wl.mean_context)
    done, total, prompt = 0.0, 0.0, wl.prompt_tail
    while done < prompt:
        chunk = min(float(replica.prefill_chunk_tokens), prompt - done)
        extra = replica.step(0, 0, chunk, replica.prefill_attended(done, chunk))
        # The chunk rides along in a step that also decodes the running batch.
        alone = replica.step(batch, kv).seconds if batch >= 1 else replica.step().seconds
        total += max(base.seconds, alone) + extra.seconds - extra.overhead_s
        done += chunk
    return total


def operating_point(replica: Replica, wl: Workload, rate: float) -> OperatingPoint | None:
    """Latency, batch and power at `rate` requests/s; None when the replica is overloaded."""
    cap = capacity(replica, wl)
    if rate <= 0 or cap.batch < 1 or rate >= cap.requests_per_s:
        return None
    rho = rate / cap.requests_per_s
    wait = 0.0 if rho <= 0.01 else math.log(100 * rho) / (2 * cap.requests_per_s * (1 - rho))
    batch, step = 0.0, replica.step()
    ttft = 0.0
    for _ in range(80):
        loaded = _loaded_step(replica, wl, max(batch, 1.0), rate)
        if loaded is None:
            return None
        step = loaded
        ttft = wait + min(1.0, batch) * step.seconds + _prefill_latency(replica, wl, batch, step)
        new_batch = rate * (ttft + (wl.output_mean - 1) * step.seconds)
        if new_batch > cap.batch:
            return None
        if abs(new_batch - batch) < 1e-6 * max(1.0, batch):
            batch = new_batch
            break
        batch = new_batch
    tail = _loaded_step(replica, wl, min(float(cap.batch), max(1.0, p99_occupancy(batch))), rate)
    if tail is None:
        return None
    duty = 1 - math.exp(-batch)  # probability that at least one request is running
    return OperatingPoint(
        rate_rps=rate,
        batch=batch,
        step=step,
        ttft_p99_s=ttft,
        tpot_mean_s=step.seconds,
        tpot_p99_s=tail.seconds,
        utilization=rho,
        power_w=replica.power_w(step, duty),
    )


def meets(point: OperatingPoint | None, ttft_slo_s: float, tpot_slo_s: float) -> bool:
    return point is not None and point.ttft_p99_s <= ttft_slo_s and point.tpot_p99_s <= tpot_slo_s


def max_rate_within_slo(
    replica: Replica, wl: Workload, ttft_slo_s: float, tpot_slo_s: float
) -> OperatingPoint | None:
    """The highest arrival rate whose p99 TTFT and TPOT meet the SLOs (bisection)."""
    cap = capacity(replica, wl)
    if cap.requests_per_s <= 0:
        return None
    lo, hi = 0.0, cap.requests_per_s
    best = operating_point(replica, wl, hi * 1e-4)
    if not meets(best, ttft_slo_s, tpot_slo_s):
        return None
    lo = hi * 1e-4
    for _ in range(50):
        mid = (lo + hi) / 2
        point = operating_point(replica, wl, mid)
        if meets(point, ttft_slo_s, tpot_slo_s):
            lo, best = mid, point
        else:
            hi = mid
        if hi - lo <= 1e-4 * hi:
            break
    return best
