"""Tensor parallelism: hand-computed all-reduce cost, and scaling against published figures.

The published figures are TensorRT-LLM 0.19.0's H100 throughput table for Llama 3.1 70B
FP8 at TP 2/4/8 (`forebay/planner/data/tensor_parallel_reference.yaml`, with its source).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest
import yaml

from forebay.planner.catalogue import accelerator, model
from forebay.planner.constants import Constants
from forebay.planner.fleet import Economics, plan_option
from forebay.planner.performance import Replica
from forebay.planner.serving import Workload, capacity
from forebay.planner.traffic import Tokens, Traffic

H100 = accelerator("h100-sxm")
LLAMA2_70B = model("llama-2-70b")

# Pinned here so the hand arithmetic below does not move when the defaults are retuned.
PINNED = Constants(
    memory_efficiency=0.85,
    allreduce_efficiency=0.75,
    allreduce_latency_s=8e-6,
    activation_bytes=2.0,
    step_overhead_s=0.001,
)


def reference() -> dict[str, Any]:
    text = (
        resources.files("forebay.planner")
        .joinpath("data", "tensor_parallel_reference.yaml")
        .read_text("utf-8")
    )
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def test_doubling_tp_halves_the_weight_read_and_adds_the_computed_all_reduce() -> None:
    """Llama-2-70B FP8 decoding 16 sequences of 512 tokens: bandwidth-bound at TP4 and TP8."""

    def decode(tp: int) -> Any:
        replica = Replica(LLAMA2_70B, H100, tp=tp, precision="fp8", constants=PINNED)
        return replica.decode_step(16, 512)

    tp4, tp8 = decode(4), decode(8)
    assert tp4.compute_s == tp8.compute_s == 0  # both bandwidth-bound

    # Weights 68.98e9 B (fp8) plus KV 16 * 80 layers * 512 * 4096 B (bf16), over
    # tp * 3350 GB/s * 0.85.
    read_bytes = 68.98e9 + 16 * 80 * 512 * 4096
    assert tp4.memory_s == pytest.approx(read_bytes / (4 * 3350e9 * 0.85), rel=1e-9)
    assert tp4.memory_s == pytest.approx(6.2919e-3, rel=1e-4)
    assert tp8.memory_s == pytest.approx(tp4.memory_s / 2, rel=1e-12)

    # Two all-reduces a layer, 80 layers, once per step: 8 us each plus the ring's
    # 2(tp-1)/tp of a 16 * 8192 * 2 B message over 450 GB/s * 0.75.
    message = 16 * 8192 * 2
    comm4 = 160 * (8e-6 + 1.5 * message / 337.5e9)  # 1.4664 ms
    comm8 = 160 * (8e-6 + 1.75 * message / 337.5e9)  # 1.4975 ms
    assert tp4.comm_s == pytest.approx(comm4, rel=1e-9)
    assert tp8.comm_s == pytest.approx(comm8, rel=1e-9)
    assert comm8 == pytest.approx(1.4975e-3, rel=1e-4)

    assert tp8.seconds == pytest.approx(tp4.seconds - tp4.memory_s / 2 + comm8 - comm4)
    # TP8 is faster, but short of 2x: the all-reduce does not shrink with tp.
    assert tp4.seconds / 2 < tp8.seconds < tp4.seconds


def test_all_reduce_latency_is_paid_per_step_not_per_token() -> None:
    r = Replica(LLAMA2_70B, H100, tp=8, precision="fp8", constants=PINNED)
    one, thousand = r.allreduce_seconds(1), r.allreduce_seconds(1000)
    bandwidth_per_token = 160 * 1.75 * 8192 * 2 / 337.5e9
    assert one == pytest.approx(160 * 8e-6 + bandwidth_per_token, rel=1e-9)
    assert thousand - one == pytest.approx(999 * bandwidth_per_token, rel=1e-9)
    assert Replica(LLAMA2_70B, H100, tp=1, constants=PINNED).allreduce_seconds(1000) == 0


def _example_option() -> Any:
    """`forebay plan --model llama-2-70b --gpu h100-sxm --gpus-per-replica 8 --precision fp8
    --rps 50 --prompt-tokens 1024 --output-tokens 256 --ttft-p99-ms 2000 --tpot-p99-ms 200`"""
    replica = Replica(LLAMA2_70B, H100, tp=8, precision="fp8")
    traffic = Traffic(50, Tokens(1024, 1024), Tokens(256, 256))
    return plan_option(replica, traffic, 2.0, 0.2, Economics())


def _published_tp8_estimate(prompt: float, output: float) -> float:
    """Output tokens/s the published TP8 column implies for a prompt/output mix.

    Least-squares fit of the time a request costs at saturation, a * prompt + b * output
    (seconds of a TP8 replica), to the TP8 rows whose prompts (1,000-2,048 tokens) bracket
    the example's; then output / that time. The fit reproduces those five rows within 19%.
    """
    rows = [r for r in reference()["rows"] if 1000 <= r["prompt"] <= 2048]
    pts = [(r["prompt"], r["output"], r["output"] / r["tps"][8]) for r in rows]
    spp = sum(p * p for p, _, _ in pts)
    soo = sum(o * o for _, o, _ in pts)
    spo = sum(p * o for p, o, _ in pts)
    spt = sum(p * t for p, _, t in pts)
    sot = sum(o * t for _, o, t in pts)
    det = spp * soo - spo * spo
    a = (spt * soo - sot * spo) / det
    b = (sot * spp - spt * spo) / det
    return output / (a * prompt + b * output)


def test_the_issue_example_is_not_interconnect_bound_and_lands_in_the_published_range() -> None:
    option = _example_option()
    assert option.replica is not None
    assert option.replica.bottleneck == "compute"
    # The published TP8 rows around it (2048/128: 1,840 tok/s; 1000/1000: 11,082;
    # 2048/2048: 8,773) put a 1024/256 mix near 5,000 output tok/s, give or take the
    # interpolation's ~20%. The model overestimates the decode-heavy rows of that table by
    # 15-35% at every TP (a decode effect, not a TP one), hence the wider upper margin.
    estimate = _published_tp8_estimate(1024, 256)
    assert estimate == pytest.approx(5020, rel=0.01)
    assert 0.75 * estimate < option.replica.max_output_tokens_per_s < 1.35 * estimate
    # Before the fix: 3,929 tok/s, "interconnect", with 60% of each step in the all-reduce.


@pytest.mark.parametrize(("prompt", "output"), [(2048, 128), (5000, 500)])
def test_tp_scaling_follows_published_prefill_heavy_rows(prompt: int, output: int) -> None:
    """Prefill-heavy rows are where the all-reduce matters: big steps, many tokens each."""
    ref = reference()
    row = next(r for r in ref["rows"] if (r["prompt"], r["output"]) == (prompt, output))
    predicted = {}
    for tp in (2, 4, 8):
        replica = Replica(
            model(ref["model"]),
            accelerator(ref["gpu"]),
            tp=tp,
            precision=ref["precision"],
            kv_dtype=ref["kv_dtype"],
            max_batch=ref["max_batch"],
        )
        predicted[tp] = capacity(replica, Workload(prompt, output)).output_tokens_per_s
        assert predicted[tp] == pytest.approx(row["tps"][tp], rel=0.15)
    published_gain = row["tps"][8] / row["tps"][2]  # 2.46x and 2.77x for 4x the GPUs
    assert predicted[8] / predicted[2] == pytest.approx(published_gain, rel=0.1)
