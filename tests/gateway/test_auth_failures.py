"""Failed authentication (issue 8, item 7): never a ledger row; counted by
reason and summarised in one log line per interval; after too many failures
from one address, every request from it gets a 429 (any key, on every
authenticated route) until the window passes, while other addresses are
unaffected. The per-address tables stay bounded."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from forebay.config.schema import AuthThrottleConfig
from forebay.gateway.auth_failures import FailedAuth
from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config

BODY = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    throttle = """
    auth:
      throttle: {max_failures: 5, window_s: 3.0}
      failure_log_interval_s: 0.2
    """
    return make_gateway(throttle + echo_config(upstream.base_url))


@pytest.fixture
def clients(gw: Gateway) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two clients on two loopback addresses: the attacker's, and someone else's."""
    made = [
        httpx.Client(
            base_url=gw.url, transport=httpx.HTTPTransport(local_address=source), timeout=10
        )
        for source in ("127.0.0.1", "127.0.0.2")
    ]
    yield made[0], made[1]
    for c in made:
        c.close()


def _sample(gw: Gateway, name: str, **labels: str) -> float:
    return gw.services.metrics.registry.get_sample_value(name, labels) or 0.0


def test_bad_keys_write_no_rows_and_are_throttled_per_address(
    gw: Gateway, clients: tuple[httpx.Client, httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    bad, other = clients
    good = {"authorization": f"Bearer {gw.tenant_key}"}
    caplog.set_level(logging.WARNING, logger="forebay")
    attempts = [
        bad.post("/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer sk-fb-{i}"})
        for i in range(3)
    ]
    attempts.append(bad.post("/v1/chat/completions", json=BODY))  # no key
    attempts.append(bad.get("/v1/models", headers={"authorization": "Basic abc"}))  # malformed
    assert [r.status_code for r in attempts] == [401] * 5
    assert all("x-request-id" not in r.headers for r in attempts)  # no exchange, no row

    # The fifth failure tripped the throttle: now even a valid key from there
    # is refused, on every authenticated route, in the OpenAI envelope.
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    throttled = [
        bad.post("/v1/chat/completions", json=BODY, headers=good),
        bad.get("/v1/models", headers=good),
        bad.get("/admin/tenants", headers=admin),
        bad.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer sk-fb-x"}),
    ]
    for r in throttled:
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "too_many_auth_failures"
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(r.headers["retry-after"]) <= 3
    # Another address is unaffected.
    fine = other.post("/v1/chat/completions", json=BODY, headers=good)
    assert fine.status_code == 200

    # The window passes (3 s): the address is let through again.
    deadline = time.monotonic() + 10
    while True:
        again = bad.post("/v1/chat/completions", json=BODY, headers=good)
        if again.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert again.status_code == 200

    rows = gw.wait_rows(2)
    time.sleep(0.2)  # a row for a refused request would have been written by now
    rows = gw.ledger_rows()
    assert sorted(str(r["request_id"]) for r in rows) == sorted(
        [fine.headers["x-request-id"], again.headers["x-request-id"]]
    ), "only the two authenticated requests are in the ledger"

    failures = "forebay_auth_failures_total"
    assert _sample(gw, failures, reason="invalid") == 3
    assert _sample(gw, failures, reason="missing") == 1
    assert _sample(gw, failures, reason="malformed") == 1
    assert _sample(gw, "forebay_auth_throttled_total") >= 4

    # One summary line per interval (never one per request), with the totals
    # by reason and the number of sources; summed over the intervals it took.
    summary = re.compile(
        r"failed authentication in the last 0.2 s: (\d+) requests \(missing key (\d+), "
        r"malformed (\d+), invalid or revoked (\d+)\) from (\d+) source address"
    )
    deadline = time.monotonic() + 5
    totals = [0, 0, 0, 0]
    while totals[0] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
        found = [summary.search(r.getMessage()) for r in caplog.records]
        lines = [m for m in found if m]
        totals = [sum(int(m.group(g)) for m in lines) for g in (1, 2, 3, 4)]
    assert totals == [5, 1, 1, 3]
    assert all(int(m.group(5)) == (1 if int(m.group(1)) else 0) for m in lines)
    assert "sk-fb-" not in caplog.text  # no key, not even a wrong one, in the logs


def test_failed_admin_authentication_is_counted_and_throttled(
    gw: Gateway, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    bad, _ = clients
    wrong = {"authorization": "Bearer not-the-admin-key"}
    statuses = [bad.get("/admin/tenants", headers=wrong).status_code for _ in range(7)]
    assert statuses == [401] * 5 + [429] * 2
    assert _sample(gw, "forebay_auth_failures_total", reason="invalid") == 5
    assert gw.ledger_rows() == []


def test_the_tables_stay_bounded_and_the_throttle_can_be_off() -> None:
    now = [0.0]
    cfg = AuthThrottleConfig(max_failures=2, window_s=60, max_sources=100)
    guard = FailedAuth(cfg, clock=lambda: now[0])
    for i in range(10_000):  # an attacker rotating addresses
        source = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        guard.failed(source, "invalid")
        guard.failed(source, "invalid")
        assert guard.tracked <= 2 * cfg.max_sources
    assert len(guard.blocked) == cfg.max_sources
    summary = guard.take_summary()
    assert summary.failures == 20_000 and len(summary.sources) == cfg.max_sources
    now[0] = 61.0  # every block has run out: the next summary forgets them all
    guard.take_summary()
    assert guard.blocked == {}

    off = FailedAuth(AuthThrottleConfig(enabled=False, max_failures=1))
    for _ in range(50):
        off.failed("10.0.0.1", "invalid")
    assert off.blocked == {} and off.tracked == 0
    off.check("10.0.0.1")  # never raises
