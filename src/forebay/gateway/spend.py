"""What a budget counter starts from when it is missing: the spend this replica knows.

A budget counter in Redis can vanish while its period runs (Redis restarted
empty, or evicted it). The reservation that finds it missing starts it from
`seed(key)`, in the same atomic step (see `forebay.state.counters`), so that
value must never be below the real spend, or a tenant could spend its budget a
second time. It is the sum of

  * the ledger's spend at the last read (its daily rollups, re-read every
    `limits.spend_refresh_s` and after every policy change, off the request
    path), and
  * what this replica has settled that the ledger did not show at that read:
    every settled request is kept, by id, until a later read finds its row.

Rows are looked up before the sums are read, so a row committed between the two
reads is counted twice until the next read (the safe side), never not at all. A
request whose row never arrives (the ledger dropped it) stays counted until its
period ends. Over-estimating is the safe side for a hard budget.

The residual window, across replicas: spend that other replicas settled after
this replica's last read and that their ledger writers had not yet written,
about `spend_refresh_s` + `ledger.flush_interval_s` of their traffic. Requests in
flight when the counter vanished settle by adding what they used (their
reservation died with it), so the count ends right; until they finish, new
requests can be admitted beside them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from forebay.gateway.counter_keys import budget_key, period_bounds
from forebay.state.policy import Period, PolicyBook, Subject, Unit
from forebay.state.policy_store import PolicyStore, SpendRow

# A settled request still missing from the ledger after this long is no longer
# looked up (its row was dropped, or is stuck behind a failing database); it stays
# counted until its period ends.
LOOKUP_FOR_S = 600.0


@dataclass(frozen=True, slots=True)
class _Settled:
    ts: float  # when the request started: its ledger row's `ts`
    at: float  # monotonic time it settled
    amounts: tuple[tuple[str, float], ...]  # (budget counter, what it used)


class SpendTracker:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._read: dict[str, float] = {}  # budget counter -> the ledger's spend at the last read
        self._unseen: dict[str, _Settled] = {}  # request id -> settled, not yet in the ledger
        self._unseen_sum: dict[str, float] = {}  # budget counter -> sum over _unseen
        self._ends: dict[str, float] = {}  # budget counter -> end of its period
        self._lock = asyncio.Lock()

    def seed(self, key: str) -> float:
        return self._read.get(key, 0.0) + self._unseen_sum.get(key, 0.0)

    def settled(
        self, request_id: str, ts: float, amounts: Iterable[tuple[str, float, float]]
    ) -> None:
        """A request's real use of each budget counter (key, amount, period end)."""
        kept = []
        for key, amount, end in amounts:
            if amount:
                self._unseen_sum[key] = self._unseen_sum.get(key, 0.0) + amount
                self._ends[key] = end
                kept.append((key, amount))
        if kept:
            self._unseen[request_id] = _Settled(ts, time.monotonic(), tuple(kept))

    @property
    def unseen(self) -> int:
        return len(self._unseen)

    async def refresh(self, store: PolicyStore, book: PolicyBook) -> None:
        """Read the ledger again: which settled requests it now holds, then the sums."""
        async with self._lock:
            now = self._clock()
            recent = time.monotonic() - LOOKUP_FOR_S
            ids = [rid for rid, s in self._unseen.items() if s.at >= recent]
            found: frozenset[str] = frozenset()
            if ids:
                since = min(self._unseen[rid].ts for rid in ids)
                found = await asyncio.to_thread(store.recorded, ids, since)
            read = await self._read_sums(store, book, now)
            for rid in found:
                settled = self._unseen.pop(rid, None)
                if settled is not None:
                    for key, amount in settled.amounts:
                        self._unseen_sum[key] -= amount
            for rid in [rid for rid, s in self._unseen.items() if s.at < recent]:
                del self._unseen[rid]  # no longer looked up; its amounts stay counted
            for key in [key for key, end in self._ends.items() if end <= now]:
                del self._ends[key]
                self._unseen_sum.pop(key, None)
            self._read = read

    async def _read_sums(
        self, store: PolicyStore, book: PolicyBook, now: float
    ) -> dict[str, float]:
        budgeted = [(scope, sid) for (scope, sid), p in book.policies.items() if p.budgets()]
        tenants = {sid for scope, sid in budgeted if scope == "tenant"}
        keys = {sid for scope, sid in budgeted if scope == "key"}
        _, month_start, _ = period_bounds("month", now)
        _, day_start, _ = period_bounds("day", now)
        today = int(day_start // 86400)
        rows = await asyncio.to_thread(store.budget_spend, tenants, keys, int(month_start // 86400))
        read: dict[str, float] = {}

        def add(subject: Subject, row: SpendRow) -> None:
            periods: tuple[Period, ...] = ("day", "month") if row.day == today else ("month",)
            values: tuple[tuple[Unit, float], ...] = (("usd", row.usd), ("tokens", row.tokens))
            for period in periods:
                for unit, value in values:
                    key = budget_key(subject, row.tenant_id, unit, period, now)
                    read[key] = read.get(key, 0.0) + value

        for row in rows:
            if row.tenant_id in tenants:
                add(Subject("tenant", row.tenant_id, ""), row)
            if row.key_id in keys:
                add(Subject("key", row.key_id, ""), row)
        return read
