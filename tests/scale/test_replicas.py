"""Two `forebay serve` processes sharing one Redis and one ledger database:
limits and budgets hold across both, and a replica stopped under load loses
and doubles no usage record."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, Upstream
from tests.support.ledger import read_ledger, wait_for_rows
from tests.support.process import ServeProcess
from tests.support.redis_server import RedisServer

PRICEY = 1_000_000  # $ per million tokens: $1 per token


@dataclass
class Pair:
    a: ServeProcess
    b: ServeProcess
    tenant_key: str
    db_url: str

    def rows(self) -> list[dict[str, object]]:
        return read_ledger(self.db_url)

    def wait_rows(self, n: int, timeout: float = 20) -> list[dict[str, object]]:
        return wait_for_rows(self.rows, n, timeout, interval=0.1)

    def admin(self, method: str, path: str, **kw: object) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        return httpx.request(method, f"{self.a.url}{path}", headers=headers, **kw)  # type: ignore[arg-type]


@pytest.fixture
def pair(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer, shared_db_url: str
) -> Iterator[Pair]:
    config = tmp_path / "forebay.yaml"
    config.write_text(
        f"""
key_refresh_s: 0.2
redis: {{url: "{redis_server.url}"}}
database: {{url: "{shared_db_url}"}}
ledger: {{flush_interval_s: 0.1}}
models:
  pricey:
    deployments:
      - name: fake-pricey
        base_url: {upstream.base_url}
        model: echo
        price: {{input_per_million: {PRICEY}, output_per_million: {PRICEY}}}
"""
    )
    env = {"FOREBAY_ADMIN_KEY": ADMIN_KEY}
    args = ("--config", str(config), "--data-dir", str(tmp_path / "data"))
    a = ServeProcess(*args, log=tmp_path / "a.log", env=env)
    b = ServeProcess(*args, log=tmp_path / "b.log", env=env)
    try:
        a.start()
        b.start()
        saved = (tmp_path / "data" / "first-start-keys.txt").read_text()
        keys = re.findall(r"sk-fb-[A-Za-z0-9_-]{20,}", saved)
        assert len(keys) == 1, "replica a bootstraps the first tenant key"
        yield Pair(a, b, keys[0], shared_db_url)
    finally:
        a.kill()
        b.kill()


async def _fire(
    urls: list[str], key: str, n: int, concurrency: int
) -> list[httpx.Response | Exception]:
    """n chat requests spread over the replicas, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)
    body = {"model": "pricey", "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 5}
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def one(i: int) -> httpx.Response | Exception:
            async with gate:
                try:
                    return await http.post(
                        f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers=headers
                    )
                except httpx.TransportError as exc:
                    return exc

        return await asyncio.gather(*(one(i) for i in range(n)))


def _set_policy(pair: Pair, policy: dict[str, object]) -> None:
    resp = pair.admin("PUT", "/admin/limits/tenant/default", json=policy)
    assert resp.status_code == 200, resp.text
    time.sleep(0.6)  # both replicas refresh policies every 0.2 s


def test_dollar_budget_holds_across_replicas(pair: Pair) -> None:
    budget = 400.0
    _set_policy(pair, {"usd_per_day": {"hard": budget}})
    results = asyncio.run(_fire([pair.a.url, pair.b.url], pair.tenant_key, 200, 200))
    statuses = [r.status_code for r in results if isinstance(r, httpx.Response)]
    assert len(statuses) == 200
    served = statuses.count(200)
    assert 0 < served < 200 and statuses.count(429) == 200 - served
    rows = pair.wait_rows(200)
    assert len(rows) == 200
    spend = sum(float(str(r["cost_usd"])) for r in rows)
    # One request reserves $29 prompt bound + $5 completion = $34 and costs $9.
    one_reservation = 34.0
    assert spend <= budget + one_reservation
    assert spend == pytest.approx(9.0 * served)


def test_rpm_holds_across_replicas(pair: Pair) -> None:
    rpm = 100
    _set_policy(pair, {"rpm": rpm})
    results = asyncio.run(_fire([pair.a.url, pair.b.url], pair.tenant_key, 160, 16))
    statuses = [r.status_code for r in results if isinstance(r, httpx.Response)]
    assert len(statuses) == 160
    # The whole run takes seconds, well inside the 60 s window: exactly rpm get through.
    assert abs(statuses.count(200) - rpm) <= rpm * 0.01
    assert statuses.count(429) == 160 - statuses.count(200)


def test_sigterm_under_load_loses_and_doubles_nothing(pair: Pair) -> None:
    async def load() -> list[httpx.Response | Exception]:
        task = asyncio.create_task(_fire([pair.a.url, pair.b.url], pair.tenant_key, 400, 16))
        await asyncio.sleep(0.5)
        assert pair.b.proc is not None
        pair.b.proc.terminate()  # SIGTERM while b is serving
        return await task

    results = asyncio.run(load())
    assert pair.b.proc is not None and pair.b.proc.wait(30) in (0, -15)
    # Requests alternate a, b, a, b...: b served some, then refused connections.
    on_b = results[1::2]
    assert any(isinstance(r, httpx.Response) for r in on_b), "b was stopped before serving"
    assert any(isinstance(r, Exception) for r in on_b), "b was stopped after the load ended"
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results[0::2])
    answered = [r for r in results if isinstance(r, httpx.Response)]
    ids = [r.headers["x-request-id"] for r in answered]
    rows = pair.wait_rows(len(ids))
    row_ids = [str(r["request_id"]) for r in rows]
    assert len(row_ids) == len(set(row_ids)), "a usage record was written twice"
    assert set(row_ids) == set(ids), "ledger rows must match the responses served"
