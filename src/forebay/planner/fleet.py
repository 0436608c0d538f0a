"""Fleet sizing: how many replicas, GPUs, kilowatts and dollars a traffic profile needs.

Each replica is sized to the highest request rate that meets the SLOs; Poisson traffic
split evenly across replicas stays Poisson, so the fleet needs ceil(demand / that rate)
replicas, and each then runs at demand / replicas, where power and latency are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from forebay.planner.performance import Replica
from forebay.planner.serving import (
    OperatingPoint,
    capacity,
    max_rate_within_slo,
    operating_point,
)
from forebay.planner.traffic import Traffic

Bottleneck = Literal["compute", "memory_bandwidth", "kv_capacity", "interconnect", "power"]


@dataclass(frozen=True)
class Economics:
    """Site and price assumptions."""

    pue: float = 1.3
    usd_per_kwh: float = 0.10
    pricing: Literal["on-demand", "reserved"] = "on-demand"
    reserved_discount: float = 0.35
    usd_per_gpu_hour: float | None = None  # overrides the catalogue price

    def gpu_hour_price(self, catalogue_price: float | None) -> float | None:
        price = self.usd_per_gpu_hour if self.usd_per_gpu_hour is not None else catalogue_price
        if price is None:
            return None
        return price * (1 - self.reserved_discount) if self.pricing == "reserved" else price


@dataclass(frozen=True)
class ReplicaReport:
    max_output_tokens_per_s: float
    slo_output_tokens_per_s: float
    ttft_p99_ms: float | None
    tpot_p99_ms: float | None
    max_concurrency: int
    power_w: float | None
    joules_per_output_token: float | None
    bottleneck: Bottleneck


@dataclass(frozen=True)
class FleetReport:
    replicas: int
    gpus: int
    kw: float | None
    usd_per_hour: float | None
    usd_per_million_output_tokens: float | None
    headroom: float


@dataclass(frozen=True)
class Option:
    """One accelerator choice: its replica and the fleet it implies (None: infeasible)."""

    gpu: str
    gpus_per_replica: int
    precision: str
    kv_dtype: str
    replica: ReplicaReport | None
    fleet: FleetReport | None
    notes: list[str] = field(default_factory=list)


def bottleneck(replica: Replica, point: OperatingPoint, kv_limited: bool) -> Bottleneck:
    """What would have to grow for this replica to serve more at the SLO."""
    step = point.step
    if step.comm_s > max(step.compute_s, step.memory_s):
        return "interconnect"
    if step.compute_s >= step.memory_s:
        return "power" if replica.power_limited else "compute"
    return "kv_capacity" if kv_limited else "memory_bandwidth"


def plan_option(
    replica: Replica,
    traffic: Traffic,
    ttft_slo_s: float,
    tpot_slo_s: float,
    economics: Economics,
) -> Option:
    base = Option(replica.gpu.key, replica.tp, replica.precision, replica.kv_dtype, None, None)
    if not replica.fits:
        return _with_note(base, "weights do not fit; raise --gpus-per-replica or lower precision")
    wl = traffic.workload()
    cap = capacity(replica, wl)
    if cap.batch < 1:
        return _with_note(base, "no room for a single sequence in the KV cache")
    best = max_rate_within_slo(replica, wl, ttft_slo_s, tpot_slo_s)
    if best is None:
        return _with_note(base, "cannot meet the SLOs even at the lowest load")
    slo_tokens = best.rate_rps * wl.output_mean
    replicas = max(1, math.ceil(traffic.rps / best.rate_rps))
    point = operating_point(replica, wl, traffic.rps / replicas) or best
    gpus = replicas * replica.tp
    tokens_per_s = point.rate_rps * wl.output_mean
    power = point.power_w
    replica_report = ReplicaReport(
        max_output_tokens_per_s=cap.output_tokens_per_s,
        slo_output_tokens_per_s=slo_tokens,
        ttft_p99_ms=point.ttft_p99_s * 1e3,
        tpot_p99_ms=point.tpot_p99_s * 1e3,
        max_concurrency=cap.batch,
        power_w=power,
        joules_per_output_token=power / tokens_per_s if power and tokens_per_s else None,
        bottleneck=bottleneck(replica, best, cap.kv_limited),
    )
    kw = power * replicas * economics.pue / 1e3 if power is not None else None
    price = economics.gpu_hour_price(replica.gpu.usd_per_gpu_hour)
    usd = None
    if price is not None:
        usd = gpus * price + (kw or 0.0) * economics.usd_per_kwh
    demand = traffic.output_tokens_per_s
    fleet = FleetReport(
        replicas=replicas,
        gpus=gpus,
        kw=kw,
        usd_per_hour=usd,
        usd_per_million_output_tokens=usd / (demand * 3600) * 1e6 if usd and demand else None,
        headroom=1 - traffic.rps / (replicas * best.rate_rps),
    )
    notes = [] if price is not None else ["no list price: pass --usd-per-gpu-hour"]
    if power is None:
        notes.append("vendor publishes no power figure: kW and J/token are n/a")
    return Option(
        replica.gpu.key,
        replica.tp,
        replica.precision,
        replica.kv_dtype,
        replica_report,
        fleet,
        notes,
    )


def _with_note(option: Option, note: str) -> Option:
    return Option(
        option.gpu, option.gpus_per_replica, option.precision, option.kv_dtype, None, None, [note]
    )
