"""The counter model every limit and budget is built from, and the in-process
store that implements it for a single gateway process.

Three kinds of counter cover everything:
  window  units over a sliding 60-second window, kept in one-second buckets
          (requests per minute, tokens per minute);
  lease   requests in flight, each a lease that expires by itself, so a replica
          that crashes cannot leak concurrency forever;
  total   a running sum that expires at the end of its period (budgets).

`reserve` checks every counter of a request and, only if all pass, adds to all
of them: all or nothing, in one step. `settle` later corrects each by the
difference between what was reserved and what was used. The Redis store runs
the same algorithm as one Lua script; a shared conformance test holds both to
it.

A total can go missing while its period runs (a Redis that restarted empty, or
evicted it). A total check therefore carries `seed`, the spend known so far, and
a missing total starts from it inside the same atomic step that reserves, so no
request can see it at zero. Each total also has an `epoch`, the token of the
reservation that created it: a request settling against a total that is not the
one it reserved in (its reservation died with the old one) adds what it used,
not the difference.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["window", "lease", "total"]
WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Check:
    kind: Kind
    key: str
    limit: float | None  # None: counted (for soft thresholds and headers) but never refused
    amount: float
    ttl_s: float = 0.0  # lease: how long a lease lives; total: seconds until the period ends
    seed: float = 0.0  # total: the value to start from if the counter does not exist


@dataclass(frozen=True, slots=True)
class Outcome:
    """`used` is each counter after the reservation (or as found, if refused);
    `wait_s` is how long until that counter frees capacity."""

    denied: int | None  # index of the first check that refused, if any
    used: tuple[float, ...]
    wait_s: tuple[float, ...]
    epochs: tuple[str, ...] = ()  # per check, if allowed: which total it reserved in ("" else)

    @property
    def allowed(self) -> bool:
        return self.denied is None


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Undo or correct one part of a reservation: `delta` for windows and totals
    (at `bucket` for windows); a lease is released. A total applies `delta` if it
    is still the `epoch` reserved in, else `actual`."""

    kind: Kind
    key: str
    delta: float = 0.0
    bucket: int = 0
    actual: float = 0.0
    epoch: str = ""


class CounterStore(Protocol):
    async def reserve(self, checks: Sequence[Check], *, now: float, token: str) -> Outcome: ...

    async def settle(self, adjustments: Sequence[Adjustment], *, token: str) -> None: ...

    async def close(self) -> None: ...


class _Window:
    """One-second buckets in time order with a running total, so checking a
    window costs O(1) apart from expiring each old bucket once."""

    __slots__ = ("buckets", "order", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, float] = {}
        self.order: deque[int] = deque()
        self.total = 0.0

    def expire(self, sec: int) -> None:
        while self.order and self.order[0] <= sec - WINDOW_S:
            self.total -= self.buckets.pop(self.order.popleft())
        if not self.order:
            self.total = 0.0  # no float residue once empty

    def add(self, sec: int, amount: float) -> None:
        if sec in self.buckets:
            self.buckets[sec] += amount
        else:
            self.buckets[sec] = amount
            if self.order and sec < self.order[-1]:  # the clock stepped back
                self.order = deque(sorted(self.buckets))
            else:
                self.order.append(sec)
        self.total += amount


class _Leases:
    """Lease expiry times by holder; expired leases are swept only once the
    earliest expiry has passed."""

    __slots__ = ("by_token", "next_expiry")

    def __init__(self) -> None:
        self.by_token: dict[str, float] = {}
        self.next_expiry = math.inf

    def sweep(self, now: float) -> None:
        if now < self.next_expiry:
            return
        self.by_token = {t: exp for t, exp in self.by_token.items() if exp > now}
        self.next_expiry = min(self.by_token.values(), default=math.inf)

    def add(self, token: str, expires: float) -> None:
        self.by_token[token] = expires
        self.next_expiry = min(self.next_expiry, expires)


class InProcessCounters:
    """The counter model in plain Python structures. The event loop runs one
    coroutine at a time and nothing here awaits, so every call is atomic."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, _Leases] = {}
        self._totals: dict[str, tuple[float, float, str]] = {}  # key -> (value, expires, epoch)

    async def reserve(self, checks: Sequence[Check], *, now: float, token: str) -> Outcome:
        return self.reserve_now(checks, now=now, token=token)

    def reserve_now(self, checks: Sequence[Check], *, now: float, token: str) -> Outcome:
        sec = math.floor(now)
        used: list[float] = []
        waits: list[float] = []
        denied: int | None = None
        for i, check in enumerate(checks):
            value, wait = self._current(check, now, sec)
            if check.limit is not None and value + check.amount > check.limit and denied is None:
                denied = i
            used.append(value)
            waits.append(wait)
        if denied is None:
            epochs = tuple(self._add(check, now, sec, token) for check in checks)
            for i, check in enumerate(checks):
                used[i] += check.amount
            return Outcome(None, tuple(used), tuple(waits), epochs)
        return Outcome(denied, tuple(used), tuple(waits))

    def _current(self, check: Check, now: float, sec: int) -> tuple[float, float]:
        if check.kind == "window":
            window = self._windows.get(check.key)
            if window is None:
                return 0.0, 0.0
            window.expire(sec)
            oldest = window.order[0] if window.order else None
            return window.total, (oldest + WINDOW_S - now if oldest is not None else 0.0)
        if check.kind == "lease":
            leases = self._leases.get(check.key)
            if leases is None:
                return 0.0, 0.0
            leases.sweep(now)
            return float(len(leases.by_token)), (1.0 if leases.by_token else 0.0)
        total = self._totals.get(check.key)
        if total is None or total[1] <= now:
            self._totals.pop(check.key, None)
            return check.seed, check.ttl_s
        return total[0], check.ttl_s

    def _add(self, check: Check, now: float, sec: int, token: str) -> str:
        if check.kind == "window":
            window = self._windows.get(check.key)
            if window is None:
                window = self._windows[check.key] = _Window()
            window.add(sec, check.amount)
        elif check.kind == "lease":
            if check.amount > 0:  # amount 0 only peeks at the count
                leases = self._leases.get(check.key)
                if leases is None:
                    leases = self._leases[check.key] = _Leases()
                leases.add(token, now + check.ttl_s)
        else:
            value, expires, epoch = self._totals.get(
                check.key, (check.seed, now + check.ttl_s, token)
            )
            self._totals[check.key] = (value + check.amount, expires, epoch)
            return epoch
        return ""

    async def settle(self, adjustments: Sequence[Adjustment], *, token: str) -> None:
        self.settle_now(adjustments, token=token)

    def settle_now(self, adjustments: Sequence[Adjustment], *, token: str) -> None:
        for adj in adjustments:
            if adj.kind == "window":
                window = self._windows.get(adj.key)
                if window is not None and adj.bucket in window.buckets:
                    window.buckets[adj.bucket] += adj.delta
                    window.total += adj.delta
            elif adj.kind == "lease":
                leases = self._leases.get(adj.key)
                if leases is not None:
                    leases.by_token.pop(token, None)
            elif adj.key in self._totals:
                value, expires, epoch = self._totals[adj.key]
                change = adj.delta if epoch == adj.epoch else adj.actual
                self._totals[adj.key] = (value + change, expires, epoch)

    async def close(self) -> None:
        return None
