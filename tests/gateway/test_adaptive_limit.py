"""A deployment's adaptive concurrency limit follows the deployment's health:
one tenant's slow or timed-out requests leave everyone's capacity alone, a
deployment that fails for every tenant is throttled, and never below its floor.
The upstream is the raw test server: "sleep <ms>" in a message delays its
answer, and it counts a message's words as its prompt tokens."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support.raw_upstream import RawUpstream


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    with RawUpstream() as server:
        yield server


def _gateway(make_gateway: GatewayFactory, raw: RawUpstream, *deployments: str) -> Gateway:
    deps = "".join(f"\n          - {{{d}}}" for d in deployments)
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    classes:
      interactive: {{priority: 1, ttft_slo_ms: 2000, deadline_ms: 30000, max_queue_ms: 1000}}
      hasty: {{priority: 1, ttft_slo_ms: 100, deadline_ms: 300, max_queue_ms: 300}}
    models:
      m:
        deployments:{deps}
    """.replace("RAW", raw.base_url)
    )


def _key(gw: Gateway, tenant: str) -> str:
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    made = httpx.post(f"{gw.url}/admin/tenants", json={"name": tenant}, headers=admin)
    assert made.status_code == 201, made.text
    key = httpx.post(f"{gw.url}/admin/keys", json={"tenant": tenant}, headers=admin)
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


async def _burst(gw: Gateway, key: str, contents: list[str], cls: str = "") -> list[int]:
    headers = {"authorization": f"Bearer {key}"}
    if cls:
        headers["x-forebay-class"] = cls
    async with httpx.AsyncClient(timeout=60) as http:
        resps = await asyncio.gather(
            *(
                http.post(
                    f"{gw.base_url}/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": c}]},
                    headers=headers,
                )
                for c in contents
            )
        )
    return [r.status_code for r in resps]


def _limit(gw: Gateway, name: str) -> float:
    (state,) = [s for s in gw.services.traffic.pools["m"].states if s.name == name]
    return state.limit


def test_one_tenants_timeouts_do_not_shrink_everyones_capacity(
    make_gateway: GatewayFactory, raw: RawUpstream
) -> None:
    """The issue: tenant A's three timeouts cut the limit from 8 to 1, and
    tenant B's burst of 16 went from 16/16 served to 12/16 and four 503s."""
    gw = _gateway(
        make_gateway,
        raw,
        'name: shared, base_url: "RAW", model: ok, max_concurrency: 8, first_byte_timeout_s: 0.4',
    )
    a, b = _key(gw, "a"), _key(gw, "b")
    long_prompt = "sleep 3000 " + "word " * 5000
    # The deployment's own first-byte limit runs out, three times...
    assert asyncio.run(_burst(gw, a, [long_prompt] * 3)) == [504] * 3
    # ...and the request's own deadline (class hasty: 300 ms), three times more.
    assert asyncio.run(_burst(gw, a, [long_prompt] * 3, cls="hasty")) == [504] * 3
    # A's slow but successful long prompts are not slow per token either.
    assert asyncio.run(_burst(gw, a, ["sleep 300 " + "word " * 5000] * 3)) == [200] * 3
    assert _limit(gw, "shared") == 8
    served = Counter(asyncio.run(_burst(gw, b, ["sleep 200 hello"] * 16)))
    assert served == {200: 16}


def _overloaded(gw: Gateway, tenants: list[str], rounds: int) -> None:
    for _ in range(rounds):
        for key in tenants:
            statuses = asyncio.run(_burst(gw, key, ["hello"]))
            assert statuses[0] >= 500


def test_a_deployment_failing_for_every_tenant_is_throttled_down_to_its_floor(
    make_gateway: GatewayFactory, raw: RawUpstream
) -> None:
    gw = _gateway(
        make_gateway,
        raw,
        'name: busy, base_url: "RAW", model: error-503-openai, max_concurrency: 8',
    )
    tenants = [_key(gw, "a"), _key(gw, "b")]
    _overloaded(gw, tenants[:1], 3)  # nine tries, all 503: one tenant is not evidence
    assert _limit(gw, "busy") == 8
    _overloaded(gw, tenants, 10)
    assert _limit(gw, "busy") == 2  # the default floor: a quarter of max_concurrency


def test_timeouts_seen_by_every_tenant_throttle_to_the_configured_floor(
    make_gateway: GatewayFactory, raw: RawUpstream
) -> None:
    gw = _gateway(
        make_gateway,
        raw,
        'name: stuck, base_url: "RAW", model: ok, max_concurrency: 8, adaptive_floor: 3, '
        "first_byte_timeout_s: 0.1",
    )
    a, b, c = _key(gw, "a"), _key(gw, "b"), _key(gw, "c")
    for _ in range(4):
        for key in (a, b, c):
            assert asyncio.run(_burst(gw, key, ["sleep 1000 hi"])) == [504]
    assert _limit(gw, "stuck") == 3
