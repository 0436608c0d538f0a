"""The performance model's global constants, each with where its value comes from.

One of them is calibrated, on one MLPerf row (`forebay plan validate` shows which,
recomputes it and reports the error on every other row); the rest are published
measurements, defaults or stated assumptions. Per-accelerator figures live in the
catalogue instead.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Constants(BaseModel):
    """Global knobs of the performance model. Frozen: pass a modified copy to experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serving_efficiency: float = Field(default=0.786, gt=0, le=1.5)
    """Fraction of the catalogue's achievable GEMM rate that a whole serving engine keeps
    (kernel fusion gaps, sampling, scheduling bubbles). CALIBRATED on MLPerf Inference v4.1
    8xH200 Llama-2-70B Offline (tensor parallel 1, so no interconnect term: the fit does
    not depend on any all-reduce constant)."""

    allreduce_efficiency: float = Field(default=0.75, gt=0, le=1.2)
    """Achieved all-reduce bus bandwidth ("busbw" in nccl-tests' sense: time =
    2(n-1)/n * bytes / busbw, https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md)
    as a fraction of the catalogue's per-direction link bandwidth. MEASURED, not
    calibrated: NCCL 2.18 NVLS all-reduce on 8x H100 SXM (Azure ND H100 v5) reaches a
    busbw of 234 / 296 / 362 / 401 GB/s at 16 / 33 / 67 / 134 MB messages (0.52-0.89 of
    450 GB/s) and 479 GB/s only at 8 GB
    (https://github.com/samuel-bohman/AI-benchmarking-guide/blob/main/Azure_Results/ND_H100_v5_results.md,
    "NCCL Bandwidth" table; read from a stored copy, not re-verified online). A
    tensor-parallel step of 1,000-5,000 tokens all-reduces 16-84 MB of bf16 activations
    (Llama-70B hidden 8192), so 0.75 (~340 GB/s on NVLink 4) sits mid-range; the bound
    allows NVLS's >1 at huge messages. This used to be fitted on the MLPerf 8xH100 TP2
    row (0.3388); that row barely depends on it (at measured bandwidth the all-reduce is
    a tenth of its step), so the fit soaked up unrelated H100-vs-H200 error and, scaled
    by TP8's larger ring factor and 4x smaller per-GPU compute, made TP8 replicas come
    out interconnect-bound. Cross-check:
    with 0.75 the model lands within 4% of TensorRT-LLM's published Llama-3.1-70B FP8
    2048/128 throughput on H100 at TP2, TP4 and TP8 (`data/tensor_parallel_reference.yaml`,
    tests/planner/test_tensor_parallel.py)."""

    memory_efficiency: float = Field(default=0.85, gt=0, le=1)
    """Achievable fraction of peak HBM bandwidth in streaming kernels. Assumption in line
    with STREAM-style measurements (80-90% of datasheet on HBM3 parts); not calibrated."""

    allreduce_latency_s: float = Field(default=8e-6, ge=0)
    """Fixed cost of one all-reduce on NVLink-class links, paid per collective (two per
    layer, per step), not per token. Order of the small-message latency of NCCL and of
    TensorRT-LLM's one-shot custom all-reduce (5-25 us; https://github.com/NVIDIA/nccl-tests).
    Assumption; not calibrated."""

    step_overhead_s: float = Field(default=0.001, ge=0)
    """Per engine step CPU work (scheduling, sampling, launch) left after CUDA graphs.
    Assumption of order 1 ms; vLLM's 2024 performance notes discuss this overhead
    (https://blog.vllm.ai/2024/09/05/perf-update.html)."""

    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    """Share of device memory the engine may use: vLLM's default gpu_memory_utilization
    (https://docs.vllm.ai/en/latest/serving/engine_args.html) and TensorRT-LLM's
    kvcache_free_gpu_mem_frac in NVIDIA's MLPerf v4.1 configs."""

    workspace_gb: float = Field(default=2.0, ge=0)
    """Per-GPU activations and workspace kept out of the KV cache. Assumption (vLLM
    profiles this at start-up; 1-3 GB for models of this size)."""

    activation_bytes: float = Field(default=2.0, gt=0)
    """Bytes per element of the activations all-reduced between tensor-parallel ranks
    (bf16/fp16 all-reduce, as vLLM and TensorRT-LLM do by default)."""

    idle_power_fraction: float = Field(default=0.15, ge=0, le=1)
    """Board power of an idle but allocated accelerator, as a fraction of TDP. Assumption
    (H100 SXM idles near 70-100 W of 700 W)."""

    memory_bound_power_fraction: float = Field(default=0.6, ge=0, le=1)
    """Dynamic power of a memory-bound step relative to a compute-bound one. Assumption
    informed by Patel et al., ASPLOS 2024 ("Characterizing Power Management Opportunities
    for LLMs in the Cloud"): token generation draws well below TDP, prompt processing near
    it."""


CONSTANTS = Constants()
