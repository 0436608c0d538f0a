"""Redis stopped mid-run: rate limits fall back to this replica's counters with
an alarm, hard budgets fail closed, and all is shared again when Redis returns."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY, GatewayFactory, Upstream, echo_config
from tests.support.redis_server import RedisServer


def _degraded(url: str) -> float:
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    for line in httpx.get(f"{url}/metrics", headers=auth).text.splitlines():
        if line.startswith("forebay_limits_degraded "):
            return float(line.split()[1])
    raise AssertionError("no forebay_limits_degraded metric")


def test_redis_outage_and_recovery(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        config = (
            f'\n    redis: {{url: "{redis.url}", timeout_s: 0.2}}'
            "\n    limits: {redis_retry_s: 0.2}" + echo_config(upstream.base_url)
        )
        gw = make_gateway(config)
        admin = {"authorization": f"Bearer {gw.admin_key}"}
        budgeted = httpx.post(
            f"{gw.url}/admin/keys", json={"tenant": "default"}, headers=admin
        ).json()
        for scope, ref, policy in [
            ("tenant", "default", {"rpm": 5}),
            ("key", budgeted["id"], {"usd_per_day": {"hard": 10}}),
        ]:
            resp = httpx.put(f"{gw.url}/admin/limits/{scope}/{ref}", json=policy, headers=admin)
            assert resp.status_code == 200, resp.text

        def chat(key: str) -> httpx.Response:
            body = {
                "model": "echo",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            }
            return httpx.post(
                f"{gw.base_url}/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
            )

        assert chat(gw.tenant_key).status_code == 200  # 1 of 5 in Redis
        assert chat(budgeted["key"]).status_code == 200  # 2 of 5
        assert _degraded(gw.url) == 0

        redis.stop()
        # Rate limits: enforced by this replica alone, from zero, with the alarm raised.
        local = [chat(gw.tenant_key).status_code for _ in range(6)]
        assert local == [200] * 5 + [429]
        assert _degraded(gw.url) == 1
        # Hard budget: fails closed, with a message that says why.
        closed = chat(budgeted["key"])
        assert closed.status_code == 503 and closed.json()["error"]["code"] == "limits_unavailable"

        redis.start()  # same port, empty: budgets are seeded from the ledger again
        deadline = time.monotonic() + 10
        status = 0
        while time.monotonic() < deadline:
            status = chat(budgeted["key"]).status_code
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200
        assert _degraded(gw.url) == 0
        # Shared again: the new Redis counts from zero (1 so far), so 4 more fit this minute.
        assert [chat(gw.tenant_key).status_code for _ in range(5)] == [200] * 4 + [429]
    finally:
        redis.stop()
