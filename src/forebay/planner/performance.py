"""The performance model: how long one engine step takes on one replica.

A replica is `tp` accelerators running one copy of a model with tensor parallelism. An
engine step (as in vLLM or TensorRT-LLM in-flight batching) advances every running
sequence by one token and may also prefill a chunk of new prompt tokens. Its duration is

    GEMMs      max(2 * active_params * tokens / compute,  weight bytes read / bandwidth)
  + attention  max(4 * d_attn * attended tokens / compute, KV bytes read / bandwidth)
  + all-reduce 2 * layers * (latency + 2(tp-1)/tp * tokens * hidden * bytes / bus)
  + fixed step overhead

so prefill comes out compute-bound, small-batch decode bandwidth-bound, and large
batches compute-bound, with the KV cache read growing with context. Compute and
bandwidth are the whole replica's (tp GPUs), so doubling tp halves both; the all-reduce
does not shrink with tp. It is paid once per step (its latency per collective, not per
token), and `bus` is the achieved all-reduce bus bandwidth of one GPU's link as
nccl-tests defines it (see `Constants.allreduce_efficiency`). The same function drives
the planner's closed forms and every step of the simulator (`forebay.sim`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from forebay.planner.catalogue import (
    BYTES_PER_KV_ELEMENT,
    BYTES_PER_PARAM,
    Accelerator,
    KvDtype,
    ModelSpec,
    Precision,
)
from forebay.planner.constants import CONSTANTS, Constants


@dataclass(frozen=True)
class StepCost:
    """Where one step's time goes. `seconds` is the total."""

    seconds: float
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float

    @property
    def busy_s(self) -> float:
        return self.seconds - self.overhead_s

    @property
    def compute_share(self) -> float:
        work = self.compute_s + self.memory_s
        return self.compute_s / work if work else 0.0


@dataclass(frozen=True)
class Replica:
    """One model copy on `tp` accelerators, with its precision and engine limits."""

    model: ModelSpec
    gpu: Accelerator
    tp: int = 1
    precision: Precision = "bf16"
    kv_dtype: KvDtype = "bf16"
    max_batch: int = 1024
    prefill_chunk_tokens: int = 8192
    power_cap_w: float | None = None
    constants: Constants = field(default=CONSTANTS)

    def __post_init__(self) -> None:
        if self.tp < 1 or self.max_batch < 1 or self.prefill_chunk_tokens < 1:
            raise ValueError("tp, max_batch and prefill_chunk_tokens must be positive")

    # -- memory ---------------------------------------------------------------------------

    @property
    def weight_bytes(self) -> float:
        return self.model.params * BYTES_PER_PARAM[self.precision]

    @property
    def kv_bytes_per_layer_token(self) -> float:
        return self.model.kv_elements_per_layer_token * BYTES_PER_KV_ELEMENT[self.kv_dtype]

    @property
    def kv_budget_bytes(self) -> float:
        """Memory left for the KV cache across the replica (negative: does not fit)."""
        c = self.constants
        per_gpu = self.gpu.memory_gb * 1e9 * c.gpu_memory_utilization - c.workspace_gb * 1e9
        return self.tp * per_gpu - self.weight_bytes

    @property
    def fits(self) -> bool:
        return self.kv_budget_bytes > 0

    @property
    def kv_capacity_layer_tokens(self) -> float:
        return max(0.0, self.kv_budget_bytes) / self.kv_bytes_per_layer_token

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of context the cache holds (counting every layer as full attention)."""
        return int(self.kv_capacity_layer_tokens / self.model.layers)

    def kv_sequences(self, context_tokens: float) -> int:
        """How many sequences of `context_tokens` fit in the KV cache at once."""
        per_seq = self.model.kv_layer_tokens(max(1.0, context_tokens))
        return int(self.kv_capacity_layer_tokens / per_seq)

    def batch_cap(self, mean_context: float) -> tuple[int, bool]:
        """Largest running batch, and whether the KV cache (not max_batch) sets it."""
        kv_limit = self.kv_sequences(mean_context)
        return (kv_limit, True) if kv_limit < self.max_batch else (self.max_batch, False)

    # -- rates ----------------------------------------------------------------------------

    @property
    def _power_throttle(self) -> float:
        """Compute slow-down when a power cap sits below TDP (clocks scale with power)."""
        cap, tdp = self.power_cap_w, self.gpu.tdp_w
        if cap is None or tdp is None or cap >= tdp:
            return 1.0
        idle = tdp * self.constants.idle_power_fraction
        return max(0.05, (cap - idle) / (tdp - idle))

    @property
    def power_limited(self) -> bool:
        return self._power_throttle < 1.0

    @property
    def gemm_flops_per_s(self) -> float:
        eff = self.constants.serving_efficiency * self._power_throttle
        return self.tp * self.gpu.matmul_flops(self.precision) * eff

    @property
    def attention_flops_per_s(self) -> float:
        eff = self.constants.serving_efficiency * self._power_throttle
        return self.tp * self.gpu.matmul_flops("bf16") * eff

    @property
    def bytes_per_s(self) -> float:
        return self.tp * self.gpu.memory_bandwidth_gbs * 1e9 * self.constants.memory_efficiency

    def weight_bytes_read(self, tokens: float) -> float:
        """Weights a step touches: all dense weights plus the experts its tokens route to."""
        m = self.model
        bytes_per = BYTES_PER_PARAM[self.precision]
        if not m.experts or not m.experts_per_token:
            return m.params * bytes_per
        expert = m.expert_params
        dense = m.params - expert * m.experts
        miss = (1 - m.experts_per_token / m.experts) ** max(tokens, 1.0)
        touched = m.experts * (1 - float(miss))
        return (dense + expert * touched) * bytes_per

    @property
    def allreduce_bus_bytes_per_s(self) -> float:
        """Achieved all-reduce bus bandwidth per GPU (nccl-tests' busbw)."""
        return self.gpu.interconnect_gbs * 1e9 * self.constants.allreduce_efficiency

    def allreduce_seconds(self, tokens: float) -> float:
        """Exposed tensor-parallel communication of one step that carries `tokens`.

        Megatron-style tensor parallelism all-reduces the activations twice a layer (after
        attention and after the MLP): each message is tokens * hidden * activation bytes,
        and a ring (or NVLS) all-reduce moves 2(tp-1)/tp of it over each GPU's link. The
        fixed latency is paid per collective, so per step, whatever the batch.
        """
        if self.tp <= 1 or tokens <= 0:
            return 0.0
        c = self.constants
        ring = 2 * (self.tp - 1) / self.tp
        message = tokens * self.model.hidden * c.activation_bytes
        per_collective = c.allreduce_latency_s + ring * message / self.allreduce_bus_bytes_per_s
        return 2 * self.model.layers * per_collective

    # -- one step -------------------------------------------------------------------------

    def step(
        self,
        decode_seqs: float = 0,
        decode_kv_layer_tokens: float = 0,
        prefill_tokens: float = 0,
        prefill_attended_layer_tokens: float = 0,
    ) -> StepCost:
        """Duration of a step that decodes `decode_seqs` sequences (whose KV totals
        `decode_kv_layer_tokens`) and prefills `prefill_tokens` new prompt tokens (which
        attend to `prefill_attended_layer_tokens` in all)."""
        m, c = self.model, self.constants
        tokens = decode_seqs + prefill_tokens
        overhead = c.step_overhead_s
        if tokens <= 0:
            return StepCost(overhead, 0.0, 0.0, 0.0, overhead)
        gemm_compute = 2 * m.active_params * tokens / self.gemm_flops_per_s
        gemm_memory = self.weight_bytes_read(tokens) / self.bytes_per_s
        d_attn = m.heads * m.head_dim
        attended = decode_kv_layer_tokens + prefill_attended_layer_tokens
        attn_compute = 4 * d_attn * attended / self.attention_flops_per_s
        attn_memory = decode_kv_layer_tokens * self.kv_bytes_per_layer_token / self.bytes_per_s
        comm = self.allreduce_seconds(tokens)
        gemm = max(gemm_compute, gemm_memory)
        attn = max(attn_compute, attn_memory)
        compute_s = (gemm_compute if gemm_compute >= gemm_memory else 0.0) + (
            attn_compute if attn_compute >= attn_memory else 0.0
        )
        memory_s = gemm + attn - compute_s
        return StepCost(gemm + attn + comm + overhead, compute_s, memory_s, comm, overhead)

    def decode_step(self, batch: float, mean_context: float) -> StepCost:
        """A pure decode step of `batch` sequences averaging `mean_context` tokens."""
        return self.step(batch, batch * self.model.kv_layer_tokens(mean_context))

    def prefill_attended(self, prefix: float, new_tokens: float) -> float:
        """Layer-tokens attended while prefilling `new_tokens` after a `prefix` (causal)."""
        m = self.model
        mean_ctx = prefix + new_tokens / 2
        full = m.layers - m.sliding_layers
        return new_tokens * (
            full * mean_ctx + m.sliding_layers * min(mean_ctx, float(m.sliding_window or 0))
        )

    def prefill_seconds(self, prompt_tokens: int, cached_tokens: int = 0) -> float:
        """Time to first token for one request on an otherwise idle replica."""
        done, total = float(cached_tokens), 0.0
        while done < prompt_tokens:
            chunk = min(float(self.prefill_chunk_tokens), prompt_tokens - done)
            total += self.step(0, 0, chunk, self.prefill_attended(done, chunk)).seconds
            done += chunk
        return total if prompt_tokens > cached_tokens else self.step(0, 0, 1, 1).seconds

    def unloaded_latency(self, prompt_tokens: int, output_tokens: int) -> tuple[float, float]:
        """(TTFT, mean time per output token) in seconds for a lone request."""
        ttft = self.prefill_seconds(prompt_tokens)
        tpot = self.decode_step(1, prompt_tokens + output_tokens / 2).seconds
        return ttft, tpot

    # -- power ----------------------------------------------------------------------------

    def power_w(self, step: StepCost, duty: float) -> float | None:
        """Replica board power while stepping `duty` of the time with steps like `step`.

        Power rises with load: idle floor, plus dynamic power scaled by how busy the step
        is and by how compute-heavy (memory-bound steps draw less).
        """
        tdp = self.gpu.tdp_w
        if tdp is None:
            return None
        c = self.constants
        ceiling = min(tdp, self.power_cap_w or tdp)
        idle = tdp * c.idle_power_fraction
        busy = step.busy_s / step.seconds if step.seconds else 0.0
        mix = c.memory_bound_power_fraction + (1 - c.memory_bound_power_fraction) * (
            step.compute_share
        )
        per_gpu = idle + (ceiling - idle) * max(0.0, min(1.0, duty)) * busy * mix
        return self.tp * per_gpu


def smallest_fitting_tp(
    model: ModelSpec, gpu: Accelerator, precision: Precision, limit: int = 8
) -> int | None:
    """The smallest power-of-two tensor parallelism that leaves room for a KV cache."""
    tp = 1
    while tp <= limit:
        replica = Replica(model, gpu, tp=tp, precision=precision)
        # Ask for room for at least one 4k-token sequence besides the weights.
        if replica.fits and replica.kv_sequences(4096) >= 1:
            return tp
        tp *= 2
    return None


def p99_occupancy(mean: float) -> float:
    """99th percentile of a Poisson count with this mean (normal approximation).

    With Poisson arrivals and any service time, the number in service is Poisson
    distributed (M/G/infinity), so this is how far the running batch swings above its mean.
    """
    return mean + 2.326 * math.sqrt(mean) if mean > 0 else 0.0
