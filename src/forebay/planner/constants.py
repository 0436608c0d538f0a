"""The performance model's global constants, each with where its value comes from.

Two of them are calibrated, on at most two MLPerf rows (`forebay plan validate` shows
which, recomputes them and reports the error on every other row); the rest are published
defaults or stated assumptions. Per-accelerator figures live in the catalogue instead.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Constants(BaseModel):
    """Global knobs of the performance model. Frozen: pass a modified copy to experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serving_efficiency: float = Field(default=0.786, gt=0, le=1.5)
    """Fraction of the catalogue's achievable GEMM rate that a whole serving engine keeps
    (kernel fusion gaps, sampling, scheduling bubbles). CALIBRATED on MLPerf Inference v4.1
    8xH200 Llama-2-70B Offline (tensor parallel 1, so no interconnect term)."""

    allreduce_efficiency: float = Field(default=0.3388, gt=0, le=1)
    """Fraction of the per-direction link bandwidth a tensor-parallel all-reduce achieves,
    exposed (not overlapped) in each step. CALIBRATED on MLPerf Inference v4.1 8xH100
    Llama-2-70B Offline (tensor parallel 2, the only multi-GPU replica among the rows)."""

    memory_efficiency: float = Field(default=0.85, gt=0, le=1)
    """Achievable fraction of peak HBM bandwidth in streaming kernels. Assumption in line
    with STREAM-style measurements (80-90% of datasheet on HBM3 parts); not calibrated."""

    allreduce_latency_s: float = Field(default=8e-6, ge=0)
    """Fixed cost of one small all-reduce on NVLink-class links (nccl-tests report 5-10 us
    at small sizes, https://github.com/NVIDIA/nccl-tests). Two all-reduces per layer."""

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
