"""Load as the upstreams themselves report it, for least-loaded routing.

vLLM (and `forebay sim`) expose `vllm:num_requests_running` and
`vllm:num_requests_waiting` at /metrics; llama.cpp's server exposes
`llamacpp:requests_processing` and `llamacpp:requests_deferred` there when
started with metrics on, and its busy slots at /slots otherwise. Polled off the
request path, once a second; a deployment without such metrics is left alone
after its first miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from forebay.gateway.health import DeploymentState

log = logging.getLogger("forebay.signals")

LOAD_METRICS = frozenset(
    {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
    }
)


def metrics_url(base_url: str) -> str:
    root = base_url.rstrip("/")
    return (root[: -len("/v1")] if root.endswith("/v1") else root) + "/metrics"


def parse_load(text: str) -> float | None:
    total, seen = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in LOAD_METRICS:
                total += sample.value
                seen = True
    return total if seen else None


def parse_slots(body: object) -> float | None:
    """llama.cpp's /slots: a list of slots, each with `is_processing`."""
    if not isinstance(body, list) or not all(isinstance(s, dict) for s in body):
        return None
    return float(sum(1 for slot in body if slot.get("is_processing")))


async def _read_load(http: aiohttp.ClientSession, base: str) -> float | None:
    root = metrics_url(base)[: -len("/metrics")]
    async with http.get(f"{root}/metrics") as resp:
        if resp.status == 200:
            load = parse_load(await resp.text())
            if load is not None:
                return load
    async with http.get(f"{root}/slots") as resp:
        if resp.status == 200 and resp.content_type == "application/json":
            return parse_slots(await resp.json())
    return None


async def poll_load(states: Sequence[DeploymentState], interval_s: float = 1.0) -> None:
    """Run until cancelled."""
    silent: set[str] = set()
    timeout = aiohttp.ClientTimeout(total=min(1.0, interval_s))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            for state in states:
                dep = state.upstream.deployment
                base = getattr(state.upstream, "base_url", None) or dep.base_url
                if not base or state.name in silent:
                    continue
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    load = await _read_load(http, base)
                    if load is None:
                        silent.add(state.name)
                        log.info("deployment %s reports no load metrics; using in-flight", dep.name)
                    else:
                        state.reported_load = load
            await asyncio.sleep(interval_s)
