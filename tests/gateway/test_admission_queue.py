"""The admission queue's ordering rules, driven directly with a controllable
clock (the HTTP path is covered in test_traffic.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from forebay.config.settings import Deployment
from forebay.config.traffic import DEFAULT_CLASSES, AdmissionConfig, ResilienceConfig
from forebay.errors import ForebayError
from forebay.gateway.admission import Lease, Pool, Ticket
from forebay.gateway.health import AdaptiveLimit, DeploymentState
from forebay.gateway.routing import Ordered, RouteRequest


@dataclass
class Slot:
    """A stand-in for an upstream adapter: the pool only asks for readiness."""

    deployment: Deployment

    def ready(self) -> bool:
        return True


def _deployment(name: str, slots: int = 1) -> Deployment:
    return Deployment(
        name=name,
        alias="m",
        provider="openai_compat",
        base_url="http://127.0.0.1:9/v1",
        upstream_model="m",
        api_key=None,
        usd_per_input_token=0,
        usd_per_output_token=0,
        joules_per_input_token=0,
        joules_per_output_token=0,
        timeout_s=1,
        connect_timeout_s=1,
        max_connections=1,
        headers=(),
        max_concurrency=slots,
        adaptive_concurrency=False,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(clock: Clock, slots: int = 1, **admission: object) -> Pool:
    state = DeploymentState.for_upstream(Slot(_deployment("d", slots)), ResilienceConfig())  # type: ignore[arg-type]
    return Pool("m", [state], Ordered(), AdmissionConfig(**admission), clock=clock)  # type: ignore[arg-type]


def _ticket(cls: str, tenant: str, clock: Clock) -> Ticket:
    return Ticket(
        cls, DEFAULT_CLASSES[cls], tenant, RouteRequest(1.0, b""), deadline=clock.now + 3600
    )


async def _order_of_service(pool: Pool, tickets: list[Ticket], *, gap: float = 0.0) -> list[str]:
    """Queue the tickets behind a held slot, then free slots one by one."""
    served: list[str] = []
    holder = pool.try_acquire(_ticket("interactive", "holder", Clock()))
    assert holder is not None
    waiters = []
    for t in tickets:
        waiters.append(asyncio.create_task(pool.acquire(t)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    lease: Lease = holder
    for _ in tickets:
        pool.release(lease, tokens=100)
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        task = done.pop()
        waiters.remove(task)
        lease = task.result()
        served.append(f"{lease.tenant}")
    pool.release(lease)
    return served


async def test_higher_class_first_and_fair_shares_within_a_class() -> None:
    clock = Clock()
    pool = _pool(clock)
    tickets = [_ticket("batch", "flood", clock) for _ in range(4)]
    tickets += [_ticket("batch", "trickle", clock)]
    tickets += [_ticket("realtime", "voice", clock)]
    served = await _order_of_service(pool, tickets)
    assert served[0] == "voice"
    # Tenant fairness by tokens served: the trickle is not behind the whole flood.
    assert served.index("trickle") <= 2


async def test_aging_lets_a_long_waiting_batch_request_through() -> None:
    clock = Clock()
    pool = _pool(clock, aging_s=1.0)
    old = _ticket("batch", "patient", clock)
    holder = pool.try_acquire(_ticket("interactive", "x", clock))
    assert holder is not None
    waiting_old = asyncio.create_task(pool.acquire(old))
    await asyncio.sleep(0.01)
    clock.now += 3.0  # batch (priority 2) has waited 3 aging periods: now ahead of realtime (0)
    fresh = _ticket("realtime", "voice", clock)
    fresh.cls = fresh.cls.model_copy(update={"max_queue_ms": 10_000})
    waiting_fresh = asyncio.create_task(pool.acquire(fresh))
    await asyncio.sleep(0.01)
    pool.release(holder)
    first = await asyncio.wait_for(waiting_old, 1)
    assert first.tenant == "patient" and not waiting_fresh.done()
    pool.release(first)
    pool.release(await asyncio.wait_for(waiting_fresh, 1))


async def test_full_queue_evicts_the_lowest_class_first() -> None:
    clock = Clock()
    pool = _pool(clock, max_queue_length=2)
    holder = pool.try_acquire(_ticket("interactive", "x", clock))
    assert holder is not None
    batch = [asyncio.create_task(pool.acquire(_ticket("batch", "b", clock))) for _ in range(2)]
    await asyncio.sleep(0.01)
    rt = _ticket("realtime", "voice", clock)
    rt.cls = rt.cls.model_copy(update={"max_queue_ms": 10_000})
    realtime = asyncio.create_task(pool.acquire(rt))
    await asyncio.sleep(0.01)
    evicted = [t for t in batch if t.done()]
    assert len(evicted) == 1
    with pytest.raises(ForebayError) as raised:
        evicted[0].result()
    assert raised.value.status == 503 and "higher class" in raised.value.message
    pool.release(holder)
    lease = await asyncio.wait_for(realtime, 1)
    assert lease.tenant == "voice"
    pool.release(lease)
    remaining = [t for t in batch if t is not evicted[0]]
    pool.release(await asyncio.wait_for(remaining[0], 1))


async def test_slots_reserved_for_the_top_class() -> None:
    clock = Clock()
    pool = _pool(clock, slots=10, reserved_for_top=0.2)  # 2 of 10 slots for realtime only
    batch = [pool.try_acquire(_ticket("batch", "b", clock)) for _ in range(9)]
    assert [lease is not None for lease in batch] == [True] * 8 + [False]
    realtime = [pool.try_acquire(_ticket("realtime", "r", clock)) for _ in range(3)]
    assert [lease is not None for lease in realtime] == [True, True, False]
    for lease in [*batch, *realtime]:
        if lease is not None:
            pool.release(lease)


def test_adaptive_limit_shrinks_when_latency_per_token_rises_and_recovers() -> None:
    limit = AdaptiveLimit(limit=64, floor=16, ceiling=64)
    now = 0.0
    for _ in range(200):
        limit.observe(0.1, 10, "a", now)
    assert limit.limit == 64
    for _ in range(30):
        limit.observe(1.0, 10, "a", now)  # ten times the long-term time per token
    shrunk = limit.limit
    assert 16 <= shrunk < 0.75 * 64
    for _ in range(300):
        limit.observe(0.1, 10, "a", now)
    assert limit.limit > shrunk * 1.5


def test_adaptive_limit_ignores_long_requests_that_are_not_slow_per_token() -> None:
    limit = AdaptiveLimit(limit=64, ceiling=64)
    for _ in range(200):
        limit.observe(0.1, 10, "a", 0.0)
    for _ in range(30):
        limit.observe(10.0, 1000, "b", 0.0)  # a hundred times longer, for a hundred times the work
    assert limit.limit == 64


def test_adaptive_limit_needs_failures_from_several_tenants() -> None:
    limit = AdaptiveLimit(limit=8, floor=2, ceiling=8)
    for i in range(10):
        assert not limit.overloaded("noisy", i / 10)  # one tenant, however often
    assert limit.limit == 8
    assert not limit.overloaded("other", 20.0)  # the noisy tenant's failures are too old now
    assert not limit.overloaded("noisy", 20.1)  # two failures: not yet several
    assert limit.overloaded("third", 20.2)  # three, from three tenants, within the window
    assert limit.limit == 4
    for i in range(20):
        limit.overloaded("ab"[i % 2], 21.0 + i / 10)
    assert limit.limit == 2  # the floor, not below


def test_adaptive_limit_needs_a_real_share_of_failures() -> None:
    limit = AdaptiveLimit(limit=8, floor=2, ceiling=8)
    for i in range(100):  # a busy deployment, serving many tenants well
        limit.observe(0.1, 10, f"t{i % 7}", i / 100)
    for tenant in ("a", "b", "c", "d"):
        assert not limit.overloaded(tenant, 1.0)  # 4 failures in 104 tries
    assert limit.limit == 8
