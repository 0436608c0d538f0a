"""The performance model against cases worked out by hand from the catalogue figures."""

from __future__ import annotations

import pytest

from forebay.planner.catalogue import accelerator, model
from forebay.planner.constants import CONSTANTS
from forebay.planner.performance import Replica, p99_occupancy, smallest_fitting_tp

H100 = accelerator("h100-sxm")
C = CONSTANTS
BW = 3350e9 * C.memory_efficiency  # achievable bytes/s on one H100
BF16_RATE = 989.4e12 * 0.72 * C.serving_efficiency  # achievable FLOP/s on one H100


def llama8b(**kw: object) -> Replica:
    return Replica(model("llama-3.1-8b"), H100, **kw)  # type: ignore[arg-type]


def test_weights_and_kv_bytes() -> None:
    r = llama8b()
    assert r.weight_bytes == pytest.approx(8.03e9 * 2)
    # K and V, 8 KV heads of 128 in bf16: 2 * 8 * 128 * 2 B per layer-token.
    assert r.kv_bytes_per_layer_token == 4096
    assert Replica(model("llama-2-70b"), H100, kv_dtype="fp8").kv_bytes_per_layer_token == 2048
    # DeepSeek-V3 caches its 576-wide latent, not per-head K and V.
    assert Replica(model("deepseek-v3"), H100).kv_bytes_per_layer_token == 576 * 2


def test_kv_capacity_is_memory_left_after_weights() -> None:
    # 80 GB * 0.9 - 2 GB workspace - 16.06 GB weights = 53.94 GB; / 4096 B / 32 layers.
    assert llama8b().kv_capacity_tokens == int(53.94e9 / 4096 / 32)
    assert llama8b(max_batch=10_000).batch_cap(1000) == (int(53.94e9 / 4096 / 32 / 1000), True)
    assert llama8b(max_batch=64).batch_cap(1000) == (64, False)


def test_single_sequence_decode_is_bandwidth_bound() -> None:
    step = llama8b().decode_step(1, 1000)
    expected = 16.06e9 / BW + 1000 * 32 * 4096 / BW + C.step_overhead_s
    assert step.seconds == pytest.approx(expected, rel=1e-3)
    assert step.compute_s == 0 and step.comm_s == 0


def test_prefill_is_compute_bound() -> None:
    r = llama8b()
    gemm = 2 * 8.03e9 * 1000 / BF16_RATE
    attention = 4 * 32 * 128 * (1000 * 32 * 500) / BF16_RATE  # causal: mean context 500
    assert r.prefill_seconds(1000) == pytest.approx(gemm + attention + C.step_overhead_s, rel=1e-3)


def test_big_batches_become_compute_bound() -> None:
    r = llama8b()
    assert r.decode_step(4, 500).compute_share == 0
    assert r.decode_step(512, 500).compute_s > 0


def test_tensor_parallel_adds_the_all_reduce() -> None:
    one = Replica(model("llama-2-70b"), H100, tp=2, precision="fp8")
    step = one.step(decode_seqs=100, decode_kv_layer_tokens=100 * 80 * 500)
    link = 450e9 * C.allreduce_efficiency
    per_layer = C.allreduce_latency_s + 1.0 * 100 * 8192 * 2 / link  # ring factor 2(2-1)/2
    assert step.comm_s == pytest.approx(2 * 80 * per_layer, rel=1e-9)


def test_moe_reads_only_the_experts_its_tokens_use() -> None:
    r = Replica(model("mixtral-8x7b"), H100)
    one = r.weight_bytes_read(1)
    dense = 46.7e9 - 8 * 5.6333e9
    assert one == pytest.approx((dense + 2 * 5.6333e9) * 2, rel=1e-3)
    assert r.weight_bytes_read(10_000) == pytest.approx(r.weight_bytes, rel=1e-6)


def test_power_rises_with_load_and_stays_under_tdp() -> None:
    r = llama8b()
    step = r.decode_step(256, 1000)
    idle = r.power_w(step, 0.0)
    busy = r.power_w(step, 1.0)
    assert idle == pytest.approx(700 * C.idle_power_fraction)
    assert idle is not None and busy is not None and idle < busy <= 700
    assert Replica(model("llama-3.1-8b"), accelerator("tpu-v6e")).power_w(step, 1.0) is None


def test_power_cap_slows_compute() -> None:
    capped = llama8b(power_cap_w=400)
    assert capped.power_limited
    assert capped.prefill_seconds(4000) > llama8b().prefill_seconds(4000)


def test_smallest_fitting_tensor_parallelism() -> None:
    assert smallest_fitting_tp(model("llama-3.1-8b"), H100, "bf16") == 1
    assert smallest_fitting_tp(model("llama-2-70b"), H100, "bf16") == 2
    assert smallest_fitting_tp(model("llama-3.1-405b"), H100, "fp8") == 8
    assert smallest_fitting_tp(model("deepseek-v3"), accelerator("l4"), "fp8") is None


def test_p99_of_a_poisson_batch() -> None:
    assert p99_occupancy(100) == pytest.approx(100 + 2.326 * 10)
    assert p99_occupancy(0) == 0
