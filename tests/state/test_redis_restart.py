"""Redis killed (SIGKILL) and started again empty on the same port, between two
bursts: hard budgets hold (the counter starts from the spend already known, in the
same Lua step that reserves), requests in flight across the restart are counted,
and the stale pooled connections cost no 503."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config
from tests.support.redis_server import RedisServer

RESERVATION = 34.0  # "a b c" on `pricey`: 29 prompt tokens bound + 5 output, $1 a token
COST = 9.0  # what it really uses: 6 prompt + 3 completion tokens


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def _restart_empty(redis: RedisServer) -> None:
    assert redis.proc is not None
    redis.proc.kill()  # SIGKILL: nothing saved, every pooled connection left dead
    redis.proc.wait()
    redis.start()  # same port, no data


def _gateway(
    make_gateway: GatewayFactory, upstream: Upstream, redis: RedisServer, spend_refresh_s: float
) -> Gateway:
    config = (
        f'\n    redis: {{url: "{redis.url}", timeout_s: 2.0}}'
        f"\n    limits: {{spend_refresh_s: {spend_refresh_s}}}"
        + echo_config(upstream.base_url)
        + f"""
      pricey:
        deployments:
          - name: fake-pricey
            base_url: {upstream.base_url}
            model: echo
            price: {{input_per_million: 1000000, output_per_million: 1000000}}
      pricey-slow:
        deployments:
          - name: fake-pricey-slow
            base_url: {upstream.base_url}
            model: slow-1500
            price: {{input_per_million: 1000000, output_per_million: 1000000}}
    """
    )
    return make_gateway(config)


def _admin(gw: Gateway, method: str, path: str, **kw: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.admin_key}"}
    return httpx.request(method, f"{gw.url}{path}", headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def _counted(gw: Gateway) -> float:
    usage = _admin(gw, "GET", "/admin/limits/tenant/default").json()["usage"]
    return float(usage["usd_per_day"]["used"])


def _spend(gw: Gateway, n: int) -> float:
    rows = gw.wait_rows(n)
    assert len(rows) == n
    return sum(float(str(r["cost_usd"])) for r in rows)


async def _chats(gw: Gateway, n: int, model: str = "pricey") -> list[int]:
    body = {"model": model, "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 5}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as http:
        url = f"{gw.base_url}/chat/completions"
        replies = await asyncio.gather(
            *(http.post(url, json=body, headers=headers) for _ in range(n))
        )
    return [r.status_code for r in replies]


# 60 s: no ledger read between the two bursts, so the counter must start from what this
# replica settled itself; 0.2 s: reads land in between, and rows found there are not
# counted twice.
@pytest.mark.parametrize("spend_refresh_s", [60.0, 0.2])
def test_a_budget_holds_across_a_redis_restart(
    make_gateway: GatewayFactory, upstream: Upstream, redis: RedisServer, spend_refresh_s: float
) -> None:
    gw = _gateway(make_gateway, upstream, redis, spend_refresh_s)
    budget = 200.0
    resp = _admin(gw, "PUT", "/admin/limits/tenant/default", json={"usd_per_day": {"hard": budget}})
    assert resp.status_code == 200, resp.text
    before = [asyncio.run(_chats(gw, 1))[0] for _ in range(12)]
    assert before == [200] * 12  # one at a time: $108 spent

    _restart_empty(redis)
    after = asyncio.run(_chats(gw, 30))  # at once, on the pool's dead connections

    assert set(after) <= {200, 429}, f"no 503 once Redis is back: {sorted(after)}"
    served = 12 + after.count(200)
    spend = _spend(gw, 42)
    assert spend == pytest.approx(COST * served)
    assert spend <= budget + RESERVATION  # without the seed the new counter starts at 0: ~$300
    # The counter never shows less than was really spent.
    assert _counted(gw) >= spend - 1e-6


def test_requests_in_flight_across_a_restart_are_counted(
    make_gateway: GatewayFactory, upstream: Upstream, redis: RedisServer
) -> None:
    gw = _gateway(make_gateway, upstream, redis, 60.0)
    resp = _admin(gw, "PUT", "/admin/limits/tenant/default", json={"usd_per_day": {"hard": 1000}})
    assert resp.status_code == 200, resp.text

    async def run() -> tuple[list[int], list[int]]:
        slow = asyncio.create_task(_chats(gw, 3, "pricey-slow"))  # reserved, then 1.5 s upstream
        pool = gw.services.traffic.pools["pricey-slow"]
        deadline = time.monotonic() + 10
        while pool.active < 3:  # all three reserved and at the upstream, however loaded we are
            assert time.monotonic() < deadline, "the slow requests never reached the upstream"
            await asyncio.sleep(0.01)
        await asyncio.to_thread(_restart_empty, redis)
        fast = await _chats(gw, 2)  # creates the new counter while the slow ones are out
        return await slow, fast

    slow, fast = asyncio.run(run())
    assert slow == [200] * 3 and fast == [200] * 2
    spend = _spend(gw, 5)
    # The slow requests reserved in the counter that died: they add what they used, rather
    # than correcting the new counter by (used - reserved), which would leave it $75 short.
    assert _counted(gw) == pytest.approx(spend)
