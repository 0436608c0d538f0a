"""The part of forebay.yaml that shapes traffic: classes, admission, routing
and resilience. Defaults follow Envoy and the Google SRE book where they have
a number (retry budget 20% with a minimum of 3, backoff 25 ms base and 250 ms
cap, ejection after 5 consecutive failures for 30 s times the ejection count,
at most 300 s)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forebay.config.strict import Strict

PolicyName = Literal[
    "ordered", "weighted", "least_loaded", "cheapest_within_slo", "prefix_affinity"
]


class TrafficClassConfig(Strict):
    """A class of traffic: lower `priority` is served first."""

    priority: int = Field(ge=0)
    ttft_slo_ms: float = Field(gt=0, description="time-to-first-token objective")
    deadline_ms: float = Field(gt=0, description="end-to-end deadline; past it, the request fails")
    max_queue_ms: float = Field(ge=0, description="longest wait for a slot before shedding")
    policy: PolicyName | None = Field(None, description="overrides the alias's routing policy")
    hedge: bool = False

    @model_validator(mode="after")
    def _queue_within_deadline(self) -> TrafficClassConfig:
        if self.max_queue_ms > self.deadline_ms:
            raise ValueError("max_queue_ms must not exceed deadline_ms")
        return self


DEFAULT_CLASSES: dict[str, TrafficClassConfig] = {
    # Voice agents and the like: first token fast, never behind bulk work.
    "realtime": TrafficClassConfig(
        priority=0,
        ttft_slo_ms=500,
        deadline_ms=30_000,
        max_queue_ms=250,
        policy="least_loaded",
        hedge=True,
    ),
    "interactive": TrafficClassConfig(
        priority=1, ttft_slo_ms=2_000, deadline_ms=120_000, max_queue_ms=5_000
    ),
    # Throughput work: cheapest route, loosest objective, shed first.
    "batch": TrafficClassConfig(
        priority=2,
        ttft_slo_ms=60_000,
        deadline_ms=900_000,
        max_queue_ms=300_000,
        policy="cheapest_within_slo",
    ),
}


class AdmissionConfig(Strict):
    default_class: str = "interactive"
    # A waiting request moves up one priority level for every `aging_s` it has
    # waited, so lower classes cannot starve for ever.
    aging_s: float = Field(10.0, gt=0)
    max_queue_length: int = Field(10_000, ge=1)
    # Share of each deployment's concurrency slots (rounded down) that only the
    # highest-priority class may take, so it rarely waits for one to free up.
    reserved_for_top: float = Field(0.0, ge=0, le=0.5)
    enabled: bool = True  # off: FIFO, no classes (the baseline in bench/overload.py)


class RoutingConfig(Strict):
    policy: PolicyName = "ordered"
    prefix_chars: int = Field(2048, ge=64, description="prompt characters hashed for affinity")
    max_imbalance: float = Field(
        1.5, ge=1.0, description="affinity yields when its server is this far above mean load"
    )


class ResilienceConfig(Strict):
    max_attempts: int = Field(3, ge=1)
    backoff_base_ms: float = Field(25.0, ge=0)
    backoff_cap_ms: float = Field(250.0, ge=0)
    retry_budget_ratio: float = Field(0.2, ge=0, le=1)
    retry_budget_min: int = Field(3, ge=0)
    eject_after_failures: int = Field(5, ge=1)
    eject_base_s: float = Field(30.0, gt=0)
    eject_max_s: float = Field(300.0, gt=0)
