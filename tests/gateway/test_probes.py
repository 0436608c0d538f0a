"""Readiness from real health: background probes of remote deployments, shown
per alias in /readyz, and used to route around a deployment that is down
(but never to refuse the last one)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support.openai_server import FakeUpstream
from tests.support.servers import ServerThread, free_port


def _readyz(gw: Gateway) -> httpx.Response:
    return httpx.get(f"{gw.url}/readyz", headers={"authorization": f"Bearer {gw.admin_key}"})


def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _state(gw: Gateway, alias: str, deployment: str) -> dict[str, object]:
    alias_detail = _readyz(gw).json()["aliases"][alias]
    return alias_detail["deployments"][deployment]  # type: ignore[no-any-return]


def _chat(gw: Gateway, model: str) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
    )


def test_readyz_follows_probes_and_routing_skips_a_dead_deployment(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    nothing_there = free_port()
    solo = ServerThread(FakeUpstream().app()).start()
    solo_port = solo.port
    gw = make_gateway(
        f"""
        probes: {{interval_s: 0.1, timeout_s: 0.5}}
        resilience: {{eject_after_failures: 1000}}  # only the probes may say "down" here
        models:
          pair:
            routing: {{policy: ordered}}
            deployments:
              - {{name: gone, base_url: "http://127.0.0.1:{nothing_there}/v1", model: echo}}
              - {{name: alive, base_url: "{upstream.base_url}", model: echo}}
          solo:
            deployments:
              - {{name: flaky, base_url: "{solo.url}/v1", model: echo}}
        """
    )
    try:
        _until(lambda: _state(gw, "pair", "gone")["state"] == "probe_failed", "gone fails")
        gone = _state(gw, "pair", "gone")
        assert "connection refused" in str(gone["detail"])
        assert _state(gw, "pair", "alive")["state"] == "ready"
        ready = _readyz(gw)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["aliases"]["pair"]["can_serve"] is True

        # `ordered` would try `gone` first; the probe sends the request straight on.
        served = _chat(gw, "pair")
        assert served.status_code == 200
        assert "gone skipped: failed health probe" in served.headers["x-forebay-route"]

        solo.stop()
        _until(lambda: _state(gw, "solo", "flaky")["state"] == "probe_failed", "solo fails")
        degraded = _readyz(gw)
        # Still 200: the process can serve; the body says what cannot, and why.
        assert degraded.status_code == 200
        assert degraded.json()["status"] == "degraded"
        assert degraded.json()["cannot_serve"] == ["solo"]
        assert httpx.get(f"{gw.url}/readyz").json() == {"status": "degraded"}
        # The last deployment of an alias is still tried, so the caller learns what
        # the upstream did (unreachable), not a premature "no deployment ready".
        failed = _chat(gw, "solo")
        assert failed.status_code == 502
        assert failed.json()["error"]["code"] == "upstream_unreachable"

        solo = ServerThread(FakeUpstream().app(), port=solo_port).start()
        _until(lambda: _state(gw, "solo", "flaky")["state"] == "ready", "solo recovers")
        assert _readyz(gw).json()["status"] == "ready"
        assert _chat(gw, "solo").status_code == 200
    finally:
        solo.stop()


def test_probes_can_be_turned_off(make_gateway: GatewayFactory) -> None:
    nothing_there = free_port()
    gw = make_gateway(
        f"""
        probes: {{enabled: false}}
        models:
          lone:
            deployments:
              - {{name: gone, base_url: "http://127.0.0.1:{nothing_there}/v1", model: echo}}
        """
    )
    time.sleep(0.3)
    assert _state(gw, "lone", "gone") == {"state": "ready", "detail": "", "in_flight": 0}
