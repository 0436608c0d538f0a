"""The counter model: the in-process store and the Redis Lua store must agree
on every step, and reservations must hold the limits they check."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forebay.state.counters import Adjustment, Check, InProcessCounters, Outcome
from forebay.state.redis_counters import RedisCounters
from tests.support.redis_server import RedisServer


@dataclass(frozen=True)
class Op:
    advance_s: float
    amount: int
    actual: int  # what the request really used; settled right away or later
    settle_now: bool


ops_strategy = st.lists(
    st.builds(
        Op,
        advance_s=st.sampled_from([0.0, 0.3, 1.0, 7.0, 31.0]),
        amount=st.integers(1, 40),
        actual=st.integers(0, 40),
        settle_now=st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


def _checks(prefix: str, op: Op) -> list[Check]:
    return [
        Check("window", f"{prefix}:rpm", 10, 1),
        Check("window", f"{prefix}:tpm", 120, op.amount),
        Check("lease", f"{prefix}:conc", 3, 1, ttl_s=45),
        Check("total", f"{prefix}:usd", 300, op.amount, ttl_s=3600),
        Check("total", f"{prefix}:soft", None, op.amount, ttl_s=3600),
    ]


def _settlement(prefix: str, op: Op, now: float) -> list[Adjustment]:
    delta = op.actual - op.amount
    return [
        Adjustment("window", f"{prefix}:tpm", delta, bucket=int(now)),
        Adjustment("lease", f"{prefix}:conc"),
        Adjustment("total", f"{prefix}:usd", delta),
        Adjustment("total", f"{prefix}:soft", delta),
    ]


async def _run(
    store: InProcessCounters | RedisCounters, prefix: str, ops: list[Op]
) -> list[Outcome]:
    now = 1_800_000_000.0
    pending: list[tuple[str, Op, float]] = []
    outcomes = []
    for i, op in enumerate(ops):
        now += op.advance_s
        token = f"r{i}"
        out = await store.reserve(_checks(prefix, op), now=now, token=token)
        outcomes.append(out)
        if out.allowed:
            if op.settle_now:
                await store.settle(_settlement(prefix, op, now), token=token)
            else:
                pending.append((token, op, now))
        if len(pending) > 2:  # settle the oldest in-flight request
            t, o, at = pending.pop(0)
            await store.settle(_settlement(prefix, o, at), token=t)
    return outcomes


@given(ops=ops_strategy)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_redis_and_in_process_agree_step_by_step(redis_server: RedisServer, ops: list[Op]) -> None:
    async def both() -> tuple[list[Outcome], list[Outcome]]:
        local = await _run(InProcessCounters(), "p", ops)
        store = RedisCounters.from_url(redis_server.url, timeout_s=2)
        try:
            remote = await _run(store, f"{{t:{secrets.token_hex(6)}}}", ops)
        finally:
            await store.close()
        return local, remote

    local, remote = asyncio.run(both())
    for a, b in zip(local, remote, strict=True):
        assert a.denied == b.denied
        assert a.used == pytest.approx(b.used)
        assert a.wait_s == pytest.approx(b.wait_s)


@given(ops=ops_strategy)
@settings(max_examples=150, deadline=None)
def test_reservations_never_exceed_a_limit_and_settle_to_actual_use(ops: list[Op]) -> None:
    store = InProcessCounters()
    now = 1_800_000_000.0
    spent = 0.0  # settled actual use of allowed requests
    reserved_open = 0.0
    in_flight: list[tuple[str, Op, float]] = []
    for i, op in enumerate(ops):
        now += op.advance_s
        out = store.reserve_now(_checks("p", op), now=now, token=f"r{i}")
        if out.allowed:
            # Every limited counter is within its limit right after a reservation.
            assert out.used[0] <= 10 and out.used[1] <= 120
            assert out.used[2] <= 3 and out.used[3] <= 300
            in_flight.append((f"r{i}", op, now))
            reserved_open += op.amount
        else:
            assert out.denied is not None
            limits = (10, 120, 3, 300)
            assert (
                out.used[out.denied] + [1, op.amount, 1, op.amount][out.denied] > limits[out.denied]
            )
        if len(in_flight) > 2:
            token, o, at = in_flight.pop(0)
            store.settle_now(_settlement("p", o, at), token=token)
            spent += o.actual
            reserved_open -= o.amount
    # The budget total is exactly settled use plus what is still reserved.
    total = store.reserve_now([Check("total", "p:usd", None, 0, ttl_s=3600)], now=now, token="x")
    assert total.used[0] == pytest.approx(spent + reserved_open)
    concurrent = store.reserve_now([Check("lease", "p:conc", None, 0, ttl_s=1)], now=now, token="y")
    # Leases of requests still in flight are counted (unless they expired).
    assert concurrent.used[0] <= len(in_flight) + 1


def test_window_forgets_after_sixty_seconds_and_totals_after_their_period() -> None:
    store = InProcessCounters()
    t0 = 1_800_000_000.5
    rpm = [Check("window", "k:rpm", 2, 1)]
    assert store.reserve_now(rpm, now=t0, token="a").allowed
    assert store.reserve_now(rpm, now=t0 + 10, token="b").allowed
    refused = store.reserve_now(rpm, now=t0 + 20, token="c")
    assert refused.denied == 0 and refused.wait_s[0] == pytest.approx(59.5 - 20)
    assert store.reserve_now(rpm, now=t0 + 60, token="d").allowed
    day = [Check("total", "k:day", 5, 5, ttl_s=100)]
    assert store.reserve_now(day, now=t0, token="e").allowed
    assert not store.reserve_now(day, now=t0 + 99, token="f").allowed
    assert store.reserve_now(day, now=t0 + 100, token="g").allowed
