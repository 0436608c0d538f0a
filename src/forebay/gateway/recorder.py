"""The last stage of every request: exactly one ledger record and one set of
metric observations, whatever happened (success, error, aborted stream).

`finish` runs before the response completes (for a stream, before its last
bytes: see dispatch.py), and the ledger spools the event at once, so a
response that was served is recorded even if the process is killed right
after; `begin` and `routed` spool a request in flight, which a restart then
records as interrupted (ledger/replay.py)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from forebay.config.settings import Deployment
from forebay.gateway.metering import cost_usd, energy_wh
from forebay.ledger.events import UsageEvent
from forebay.ledger.writer import LedgerWriter
from forebay.protocols.canonical import Usage
from forebay.telemetry.metrics import Metrics
from forebay.tenancy.keys import Principal
from forebay.upstreams.base import Endpoint

log = logging.getLogger("forebay.access")


_ids = random.Random()  # seeded from os.urandom once; ids need uniqueness, not secrecy


def new_request_id() -> str:
    return f"req_{_ids.getrandbits(96):024x}"  # one syscall-free call per request


@dataclass(slots=True)
class Exchange:
    """What the pipeline learns about one request as it goes."""

    endpoint: Endpoint
    request_id: str = field(default_factory=new_request_id)
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    alias: str | None = None
    deployment: Deployment | None = None
    route_reason: str | None = None
    stream: bool = False
    prompt_tokens: int = 0  # all input tokens, cached ones included
    completion_tokens: int = 0  # reasoning tokens included
    # Parts of the two above (canonical.Usage's conventions): priced on their own.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    protocol: str = "openai_chat"  # the client's wire (upstreams.base.WireProtocol)
    status: int = 200
    error_type: str | None = None
    ttft_s: float | None = None
    recorded: bool = False
    # Set by the limits stage: headers for the response, and the callback that
    # settles the request's reservation with what it really used.
    headers: dict[str, str] = field(default_factory=dict)
    settle: Callable[[int, int, float], None] | None = None
    # A hedged request also pays for the attempt that lost the race.
    extra_cost_usd: float = 0.0
    route_notes: list[str] = field(default_factory=list)  # e.g. how a hedge went
    class_name: str | None = None

    def count(self, usage: Usage) -> None:
        """Take the upstream's own counts (canonical.Usage's conventions)."""
        self.prompt_tokens = usage.input_tokens
        self.completion_tokens = usage.output_tokens
        self.cache_read_tokens = usage.cache_read_tokens
        self.cache_write_tokens = usage.cache_write_tokens
        self.reasoning_tokens = usage.reasoning_tokens

    def mark_first_token(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.started

    def fail(self, status: int, error_type: str) -> None:
        self.status = status
        self.error_type = error_type


class Recorder:
    def __init__(self, ledger: LedgerWriter, metrics: Metrics, revision: str) -> None:
        self._ledger = ledger
        self._spool = ledger.spool
        self._metrics = metrics
        self._revision = revision

    def begin(self, ex: Exchange) -> None:
        """The request goes to dispatch: spool what is known of it, so that a
        process killed before `finish` still leaves a row (as interrupted)."""
        if self._spool is None:
            return
        p = ex.principal
        self._spool.begin(
            ex.request_id,
            {
                "request_id": ex.request_id,
                "ts": ex.ts,
                "tenant_id": p.tenant_id if p else None,
                "key_id": p.key_id if p else None,
                "endpoint": ex.endpoint.value,
                "alias": ex.alias,
                "stream": ex.stream,
                "traffic_class": ex.class_name,
                "config_revision": self._revision,
                "protocol": ex.protocol,
            },
        )

    def routed(self, ex: Exchange) -> None:
        """A deployment was chosen (again, on a retry): spool which."""
        if self._spool is None or ex.recorded:
            return
        dep = ex.deployment
        self._spool.routed(
            ex.request_id,
            {
                "request_id": ex.request_id,
                "deployment": dep.name if dep else None,
                "route_reason": ex.route_reason,
            },
        )

    def finish(self, ex: Exchange) -> None:
        if ex.recorded:
            return
        ex.recorded = True
        elapsed = time.perf_counter() - ex.started
        dep = ex.deployment
        cost = (
            cost_usd(
                dep,
                ex.prompt_tokens,
                ex.completion_tokens,
                ex.cache_read_tokens,
                ex.cache_write_tokens,
            )
            if dep
            else 0.0
        )
        cost += ex.extra_cost_usd
        energy = energy_wh(dep, ex.prompt_tokens, ex.completion_tokens) if dep else 0.0
        p = ex.principal
        if ex.settle is not None:
            ex.settle(ex.prompt_tokens, ex.completion_tokens, cost)
        self._ledger.submit(
            UsageEvent(
                ts=ex.ts,
                request_id=ex.request_id,
                tenant_id=p.tenant_id if p else None,
                key_id=p.key_id if p else None,
                endpoint=ex.endpoint.value,
                alias=ex.alias,
                deployment=dep.name if dep else None,
                route_reason=ex.route_reason,
                stream=ex.stream,
                prompt_tokens=ex.prompt_tokens,
                completion_tokens=ex.completion_tokens,
                tokens_estimated=ex.estimated,
                cost_usd=cost,
                energy_wh=energy,
                status=ex.status,
                error_type=ex.error_type,
                ttft_ms=ex.ttft_s * 1000 if ex.ttft_s is not None else None,
                latency_ms=elapsed * 1000,
                config_revision=self._revision,
                traffic_class=ex.class_name,
                cache_read_tokens=ex.cache_read_tokens,
                cache_write_tokens=ex.cache_write_tokens,
                reasoning_tokens=ex.reasoning_tokens,
                protocol=ex.protocol,
            )
        )
        self._metrics.observe(
            alias=ex.alias or "",
            deployment=dep.name if dep else "",
            tenant=(p.tenant_name or p.tenant_id or "") if p else "",
            endpoint=ex.endpoint.value,
            status=ex.status,
            error_type=ex.error_type,
            prompt_tokens=ex.prompt_tokens,
            completion_tokens=ex.completion_tokens,
            cost_usd=cost,
            energy_wh=energy,
            ttft_s=ex.ttft_s,
            duration_s=elapsed,
        )
        if ex.status >= 500:
            log.warning(
                "request %s %s alias=%s deployment=%s status=%d error=%s",
                ex.request_id,
                ex.endpoint.value,
                ex.alias,
                dep.name if dep else None,
                ex.status,
                ex.error_type,
            )
