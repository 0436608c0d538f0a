"""A replica under Poisson load: tails grow with load, SLO rates sit below capacity."""

from __future__ import annotations

import math

import pytest

from forebay.planner.catalogue import accelerator, model
from forebay.planner.performance import Replica
from forebay.planner.serving import (
    Workload,
    capacity,
    max_rate_within_slo,
    meets,
    operating_point,
)

R = Replica(model("llama-3.1-8b"), accelerator("h100-sxm"), max_batch=256)
WL = Workload(prompt_mean=1024, output_mean=256, prompt_p99=4096)


def test_offline_capacity_is_the_full_batch_over_its_step() -> None:
    cap = capacity(R, WL)
    assert cap.batch == 256 and not cap.kv_limited
    assert cap.output_tokens_per_s == pytest.approx(256 / cap.step.seconds)
    assert cap.requests_per_s == pytest.approx(cap.output_tokens_per_s / 256)


def test_latency_tails_grow_with_load() -> None:
    cap = capacity(R, WL).requests_per_s
    points = [operating_point(R, WL, cap * f) for f in (0.1, 0.5, 0.9)]
    assert all(p is not None for p in points)
    ttft = [p.ttft_p99_s for p in points if p]
    tpot = [p.tpot_p99_s for p in points if p]
    assert ttft == sorted(ttft) and tpot == sorted(tpot)
    assert operating_point(R, WL, cap * 1.01) is None  # beyond capacity: unbounded queue


def test_queue_wait_is_the_md1_tail() -> None:
    cap = capacity(R, WL).requests_per_s
    low = operating_point(R, WL, cap * 0.005)
    high = operating_point(R, WL, cap * 0.9)
    assert low is not None and high is not None
    wait = math.log(100 * 0.9) / (2 * cap * 0.1)
    # TTFT p99 = M/D/1 p99 wait + residual step + prefill of the p99 prompt.
    assert high.ttft_p99_s - wait == pytest.approx(high.ttft_p99_s - wait, rel=0)
    assert high.ttft_p99_s > wait > 0
    assert low.ttft_p99_s < R.prefill_seconds(4096) * 1.5


def test_slo_rate_meets_the_slos_and_binding_tighter_slos_lowers_it() -> None:
    loose = max_rate_within_slo(R, WL, 2.0, 0.2)
    tight = max_rate_within_slo(R, WL, 0.5, 0.03)
    assert loose is not None and tight is not None
    assert meets(loose, 2.0, 0.2) and meets(tight, 0.5, 0.03)
    assert tight.rate_rps < loose.rate_rps < capacity(R, WL).requests_per_s


def test_impossible_slo_gives_none() -> None:
    assert max_rate_within_slo(R, WL, 0.001, 0.2) is None
