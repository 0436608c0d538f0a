"""The counter model: the in-process store and the Redis Lua store must agree
on every step, and reservations must hold the limits they check."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio
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
    seed: int = 0  # the spend known elsewhere, for a budget counter that is missing
    wipe: bool = False  # the store loses everything first (Redis restarted empty)


ops_strategy = st.lists(
    st.builds(
        Op,
        advance_s=st.sampled_from([0.0, 0.3, 1.0, 7.0, 31.0]),
        amount=st.integers(1, 40),
        actual=st.integers(0, 40),
        settle_now=st.booleans(),
        seed=st.sampled_from([0, 0, 50, 280, 400]),
        wipe=st.sampled_from([False] * 9 + [True]),
    ),
    min_size=1,
    max_size=40,
)


def _checks(prefix: str, op: Op) -> list[Check]:
    return [
        Check("window", f"{prefix}:rpm", 10, 1),
        Check("window", f"{prefix}:tpm", 120, op.amount),
        Check("lease", f"{prefix}:conc", 3, 1, ttl_s=45),
        Check("total", f"{prefix}:usd", 300, op.amount, ttl_s=3600, seed=op.seed),
        Check("total", f"{prefix}:soft", None, op.amount, ttl_s=3600, seed=op.seed),
    ]


KEYS = ("rpm", "tpm", "conc", "usd", "soft")


def _settlement(prefix: str, op: Op, now: float, out: Outcome) -> list[Adjustment]:
    delta = op.actual - op.amount
    return [
        Adjustment("window", f"{prefix}:tpm", delta, bucket=int(now)),
        Adjustment("lease", f"{prefix}:conc"),
        Adjustment("total", f"{prefix}:usd", delta, actual=op.actual, epoch=out.epochs[3]),
        Adjustment("total", f"{prefix}:soft", delta, actual=op.actual, epoch=out.epochs[4]),
    ]


Store = InProcessCounters | RedisCounters


async def _run(
    store: Store, prefix: str, ops: list[Op], wipe: Callable[[Store], Awaitable[Store]]
) -> list[Outcome]:
    now = 1_800_000_000.0
    pending: list[tuple[str, Op, float, Outcome]] = []
    outcomes = []
    for i, op in enumerate(ops):
        now += op.advance_s
        if op.wipe:
            store = await wipe(store)
        token = f"r{i}"
        out = await store.reserve(_checks(prefix, op), now=now, token=token)
        outcomes.append(out)
        if out.allowed:
            if op.settle_now:
                await store.settle(_settlement(prefix, op, now, out), token=token)
            else:
                pending.append((token, op, now, out))
        if len(pending) > 2:  # settle the oldest in-flight request
            t, o, at, reserved = pending.pop(0)
            await store.settle(_settlement(prefix, o, at, reserved), token=t)
    # What each budget holds at the end, peeked at with nothing added.
    peek = [Check("total", f"{prefix}:{k}", None, 0, ttl_s=3600) for k in ("usd", "soft")]
    outcomes.append(await store.reserve(peek, now=now, token="peek"))
    return outcomes


@given(ops=ops_strategy)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_redis_and_in_process_agree_step_by_step(redis_server: RedisServer, ops: list[Op]) -> None:
    """Including budgets seeded when missing, and settlements of reservations that a
    restart (Redis emptied, or a fresh in-process store) lost."""
    prefix = f"{{t:{secrets.token_hex(6)}}}"

    async def fresh(_: Store) -> Store:
        return InProcessCounters()

    async def both() -> tuple[list[Outcome], list[Outcome]]:
        local = await _run(InProcessCounters(), prefix, ops, fresh)
        store = RedisCounters.from_url(redis_server.url, timeout_s=2)
        raw = redis.asyncio.Redis.from_url(redis_server.url)

        async def emptied(s: Store) -> Store:
            await raw.delete(*(f"{prefix}:{k}" for k in KEYS))
            return s

        try:
            remote = await _run(store, prefix, ops, emptied)
        finally:
            await store.close()
            await raw.aclose()
        return local, remote

    local, remote = asyncio.run(both())
    for a, b in zip(local, remote, strict=True):
        assert a.denied == b.denied
        assert a.used == pytest.approx(b.used)
        assert a.wait_s == pytest.approx(b.wait_s)
        assert a.epochs == b.epochs


def test_a_missing_budget_starts_from_its_seed_and_lost_reservations_settle_their_use() -> None:
    store = InProcessCounters()
    now = 1_800_000_000.0
    budget = [Check("total", "k:usd", 100, 10, ttl_s=3600, seed=60)]
    first = store.reserve_now(budget, now=now, token="a")
    assert first.allowed and first.used == (70,) and first.epochs == ("a",)
    # Not seeded again once it exists: the seed is only where a missing counter starts.
    second = store.reserve_now(
        [Check("total", "k:usd", 100, 10, ttl_s=3600, seed=0)], now=now, token="b"
    )
    assert second.used == (80,) and second.epochs == ("a",)
    assert not store.reserve_now(
        [Check("total", "k:usd", 100, 25, ttl_s=3600)], now=now, token="c"
    ).allowed
    # The store loses everything (a Redis restart); the next request seeds from 75 spent.
    store = InProcessCounters()
    third = store.reserve_now(
        [Check("total", "k:usd", 100, 10, ttl_s=3600, seed=75)], now=now, token="d"
    )
    assert third.used == (85,) and third.epochs == ("d",)
    # `a` reserved in the lost counter: it adds what it used (4), not 4 - 10.
    store.settle_now([Adjustment("total", "k:usd", -6, actual=4, epoch="a")], token="a")
    # `d` reserved in this one: the difference (2 used of 10).
    store.settle_now([Adjustment("total", "k:usd", -8, actual=2, epoch="d")], token="d")
    peek = store.reserve_now([Check("total", "k:usd", None, 0, ttl_s=3600)], now=now, token="e")
    assert peek.used == (75 + 4 + 2,)


@given(ops=ops_strategy)
@settings(max_examples=150, deadline=None)
def test_reservations_never_exceed_a_limit_and_settle_to_actual_use(ops: list[Op]) -> None:
    store = InProcessCounters()
    now = 1_800_000_000.0
    spent = 0.0  # settled actual use of allowed requests
    reserved_open = 0.0
    seeded: float | None = None  # where the budget started: the seed of its first reservation
    in_flight: list[tuple[str, Op, float, Outcome]] = []
    for i, op in enumerate(ops):
        now += op.advance_s
        out = store.reserve_now(_checks("p", op), now=now, token=f"r{i}")
        if out.allowed:
            seeded = op.seed if seeded is None else seeded
            # Every limited counter is within its limit right after a reservation.
            assert out.used[0] <= 10 and out.used[1] <= 120
            assert out.used[2] <= 3 and out.used[3] <= 300
            in_flight.append((f"r{i}", op, now, out))
            reserved_open += op.amount
        else:
            assert out.denied is not None
            limits = (10, 120, 3, 300)
            assert (
                out.used[out.denied] + [1, op.amount, 1, op.amount][out.denied] > limits[out.denied]
            )
        if len(in_flight) > 2:
            token, o, at, reserved = in_flight.pop(0)
            store.settle_now(_settlement("p", o, at, reserved), token=token)
            spent += o.actual
            reserved_open -= o.amount
    # The budget total is exactly settled use plus what is still reserved.
    total = store.reserve_now([Check("total", "p:usd", None, 0, ttl_s=3600)], now=now, token="x")
    assert total.used[0] == pytest.approx((seeded or 0) + spent + reserved_open)
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
