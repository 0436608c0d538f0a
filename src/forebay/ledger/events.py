"""One usage record per request, whatever happened to it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True)
class UsageEvent:
    ts: float
    request_id: str
    tenant_id: str | None
    key_id: str | None
    endpoint: str
    alias: str | None
    deployment: str | None
    route_reason: str | None
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: bool
    cost_usd: float
    energy_wh: float
    status: int
    error_type: str | None
    ttft_ms: float | None
    latency_ms: float
    config_revision: str
    traffic_class: str | None = None
    # Parts of prompt_tokens and completion_tokens (canonical.Usage's conventions).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    protocol: str = "openai_chat"  # the client's wire protocol (upstreams.base.WireProtocol)

    def row(self) -> dict[str, Any]:
        # A flat comprehension: dataclasses.asdict deep-copies every field and
        # cost ~10x as much, on the writer thread that shares the GIL.
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(UsageEvent))
