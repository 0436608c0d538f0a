"""vLLM-compatible Prometheus metrics for one simulated server (its own registry).

Names and labels follow vLLM's /metrics so that anything reading a real vLLM server
(the gateway's least-loaded routing, dashboards) reads the simulator the same way.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


class SimMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name"]
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r)

        self.running = gauge("vllm:num_requests_running", "Requests in the running batch.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting to be admitted.")
        self.cache_usage = gauge(
            "vllm:gpu_cache_usage_perc", "KV-cache usage: 1 means all blocks in use."
        )
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        )
        self.prefix_hits = counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated.")
        self.preemptions = counter("vllm:num_preemptions", "Sequences preempted (recomputed).")
        self.success = counter("vllm:request_success", "Requests finished.")
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token (simulated seconds).",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "vllm:time_per_output_token_seconds",
            "Time per output token (simulated seconds).",
            labels,
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.model_name = model_name
        for metric in (self.running, self.waiting, self.cache_usage):
            metric.labels(model_name).set(0)
        for c in (
            self.prefix_queries,
            self.prefix_hits,
            self.prompt_tokens,
            self.generation_tokens,
            self.preemptions,
            self.success,
        ):
            c.labels(model_name)
