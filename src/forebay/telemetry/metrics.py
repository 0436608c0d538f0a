"""Prometheus metrics, one registry per app (no globals, so tests never reset state).

Label children are cached per (alias, deployment, tenant), because
`labels()` on every request costs more than the observation itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

# Seconds; spans an instant cache hit to a long generation.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 5, 10, 30)

_LABELS = ("alias", "deployment", "tenant")


@dataclass(slots=True)
class _Children:
    prompt_tokens: Counter
    completion_tokens: Counter
    cost: Counter
    energy: Counter
    ttft: Histogram
    duration: Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "forebay_requests",
            "Requests answered, by status code.",
            [*_LABELS, "endpoint", "code"],
            registry=r,
        )
        self.errors = Counter(
            "forebay_errors",
            "Requests that ended in an error, by error type.",
            [*_LABELS, "type"],
            registry=r,
        )
        self.tokens = Counter(
            "forebay_tokens",
            "Tokens processed, prompt or completion.",
            [*_LABELS, "direction"],
            registry=r,
        )
        self.cost = Counter("forebay_cost_usd", "Spend in US dollars.", _LABELS, registry=r)
        self.energy = Counter(
            "forebay_energy_wh", "Estimated energy in watt-hours.", _LABELS, registry=r
        )
        self.ttft = Histogram(
            "forebay_time_to_first_token_seconds",
            "Time to first token (streaming).",
            _LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "forebay_request_duration_seconds",
            "End-to-end request latency.",
            _LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ledger_dropped = Counter(
            "forebay_ledger_dropped_events",
            "Usage events dropped because the ledger queue was full or the database failed.",
            registry=r,
        )
        self.ledger_written = Counter(
            "forebay_ledger_written_events", "Usage events written to the ledger.", registry=r
        )
        self.ledger_rejected = Counter(
            "forebay_ledger_rejected_events",
            "Usage events the database refused for good (a value or constraint), kept in "
            "<data dir>/ledger-dead-letter.jsonl instead.",
            registry=r,
        )
        self.ledger_replayed = Counter(
            "forebay_ledger_replayed_events",
            "Usage events of requests served by a process that died before writing them, "
            "written at start from its spool.",
            registry=r,
        )
        self.ledger_interrupted = Counter(
            "forebay_ledger_interrupted_events",
            "Requests in flight when their process died, recorded at start as interrupted.",
            registry=r,
        )
        self.ledger_spool_errors = Counter(
            "forebay_ledger_spool_errors",
            "Spool writes that failed (e.g. disk full): those events are only in memory.",
            registry=r,
        )
        self.auth_failures = Counter(
            "forebay_auth_failures",
            "Requests refused for their API key: missing, malformed, or invalid (unknown or "
            "revoked). Not in the ledger.",
            ["reason"],
            registry=r,
        )
        self.auth_throttled = Counter(
            "forebay_auth_throttled",
            "Requests refused (429) because their source address failed authentication too often.",
            registry=r,
        )
        self.auth_throttled_sources = Gauge(
            "forebay_auth_throttled_sources",
            "Source addresses being refused now after failed authentication.",
            registry=r,
        )
        self.ledger_queue = Gauge(
            "forebay_ledger_queue_depth", "Usage events waiting to be written.", registry=r
        )
        self.upstream_ready = Gauge(
            "forebay_upstream_ready",
            "1 when a deployment can take requests.",
            ["deployment"],
            registry=r,
        )
        self.worker_restarts = Gauge(
            "forebay_local_worker_restarts",
            "Restarts of an embedded model worker.",
            ["deployment"],
            registry=r,
        )
        self.in_flight = Gauge(
            "forebay_in_flight_requests", "Requests being served now.", ["alias"], registry=r
        )
        self.limit_rejections = Counter(
            "forebay_limit_rejections",
            "Requests refused by a rate limit or budget (limit: requests, tokens, "
            "concurrent, usd_per_day, ..., or *_unavailable when Redis is down).",
            ["tenant", "limit"],
            registry=r,
        )
        self.budget_soft_exceeded = Counter(
            "forebay_budget_soft_exceeded",
            "Requests admitted past a budget's soft threshold.",
            ["scope", "budget"],
            registry=r,
        )
        self.limits_degraded = Gauge(
            "forebay_limits_degraded",
            "1 while the shared counter store (Redis) is unreachable and fallbacks apply.",
            registry=r,
        )
        self.shed = Counter(
            "forebay_shed_requests",
            "Requests refused by admission (503) to protect their class's deadline.",
            ["alias", "traffic_class"],
            registry=r,
        )
        self.ejections = Counter(
            "forebay_ejections",
            "Times a deployment was ejected after consecutive failures.",
            ["deployment"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "forebay_queue_depth",
            "Requests waiting for a slot.",
            ["alias", "traffic_class"],
            registry=r,
        )
        self.deployment_limit = Gauge(
            "forebay_deployment_concurrency_limit",
            "A deployment's current (adaptive) concurrency limit.",
            ["deployment"],
            registry=r,
        )
        self._children: dict[tuple[str, str, str], _Children] = {}
        self._req_children: dict[tuple[str, str, str, str, int], MetricWrapperBase] = {}

    def _for(self, alias: str, deployment: str, tenant: str) -> _Children:
        key = (alias, deployment, tenant)
        ch = self._children.get(key)
        if ch is None:
            ch = _Children(
                prompt_tokens=self.tokens.labels(alias, deployment, tenant, "prompt"),
                completion_tokens=self.tokens.labels(alias, deployment, tenant, "completion"),
                cost=self.cost.labels(alias, deployment, tenant),
                energy=self.energy.labels(alias, deployment, tenant),
                ttft=self.ttft.labels(alias, deployment, tenant),
                duration=self.duration.labels(alias, deployment, tenant),
            )
            self._children[key] = ch
        return ch

    def observe(
        self,
        *,
        alias: str,
        deployment: str,
        tenant: str,
        endpoint: str,
        status: int,
        error_type: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        energy_wh: float,
        ttft_s: float | None,
        duration_s: float,
    ) -> None:
        rkey = (alias, deployment, tenant, endpoint, status)
        req = self._req_children.get(rkey)
        if req is None:
            req = self.requests.labels(alias, deployment, tenant, endpoint, str(status))
            self._req_children[rkey] = req
        req.inc()  # type: ignore[attr-defined]
        if error_type is not None:
            self.errors.labels(alias, deployment, tenant, error_type).inc()
        ch = self._for(alias, deployment, tenant)
        if prompt_tokens:
            ch.prompt_tokens.inc(prompt_tokens)
        if completion_tokens:
            ch.completion_tokens.inc(completion_tokens)
        if cost_usd:
            ch.cost.inc(cost_usd)
        if energy_wh:
            ch.energy.inc(energy_wh)
        if ttft_s is not None:
            ch.ttft.observe(ttft_s)
        ch.duration.observe(duration_s)

    def bind_ledger(self, depth: Callable[[], int]) -> None:
        self.ledger_queue.set_function(depth)

    def bind_connections(
        self, open_now: Callable[[], int], refused: Callable[[], Mapping[str, int]]
    ) -> None:
        """Client connections open, and those the HTTP edge refused or cut, by
        reason; read from the connection guard's plain counters at scrape time."""
        Gauge(
            "forebay_client_connections", "Client connections open now.", registry=self.registry
        ).set_function(lambda: float(open_now()))
        self.registry.register(_RefusalCollector(refused))


class _RefusalCollector(Collector):
    def __init__(self, refused: Callable[[], Mapping[str, int]]) -> None:
        self._refused = refused

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "forebay_connections_refused",
            "Client connections the HTTP edge refused or closed: connection_limit (503), "
            "idle_evicted, headers_too_large (431), header_timeout, body_timeout (408).",
            labels=["reason"],
        )
        for reason, count in self._refused().items():
            family.add_metric([reason], float(count))
        yield family
