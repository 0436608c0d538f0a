"""Redis-backed counters that keep serving, in a documented way, when Redis
cannot be reached.

Default behaviour (configurable under `limits.on_redis_down`):
  * rate limits (rpm, tpm, concurrency) fall back to this replica's own
    in-process counters, so each replica enforces the full limit by itself
    (with N replicas a tenant can get up to N times its rate) and an alarm is
    raised: `forebay_limits_degraded` is 1 and a warning is logged;
  * hard budgets fail closed: requests whose tenant or key has a hard budget
    get 503 until Redis answers again, since spend cannot be checked exactly.
Redis is tried again every `redis_retry_s`; when it answers, every new
reservation goes back to it. Requests reserved locally settle locally. A Redis
that came back empty needs nothing from here: each budget counter starts from
the spend its check carries (see `counters`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

from redis.exceptions import RedisError

from forebay.state.counters import Adjustment, Check, InProcessCounters, Outcome
from forebay.state.redis_counters import RedisCounters

log = logging.getLogger("forebay.limits")


class StateUnavailable(Exception):
    """The shared counters cannot be reached and policy says: refuse."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class RedisWithFallback:
    def __init__(
        self,
        redis: RedisCounters,
        *,
        rate_limits: Literal["local", "allow", "refuse"],
        budgets: Literal["refuse", "allow"],
        retry_s: float,
        on_degraded: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self.redis = redis
        self.local = InProcessCounters()
        self._rate_mode = rate_limits
        self._budget_mode = budgets
        self._retry_s = retry_s
        self._down_until = 0.0
        self._degraded = False
        self._on_degraded = on_degraded
        self._local_tokens: set[str] = set()

    def _mark(self, degraded: bool, exc: Exception | None = None) -> None:
        if degraded == self._degraded:
            return
        self._degraded = degraded
        self._on_degraded(degraded)
        if degraded:
            log.warning(
                "Redis unreachable (%s); rate limits: %s, hard budgets: %s",
                type(exc).__name__ if exc else "?",
                self._rate_mode,
                self._budget_mode,
            )
        else:
            log.warning("Redis reachable again; limits are shared across replicas")

    async def reserve(self, checks: Sequence[Check], *, now: float, token: str) -> Outcome:
        if time.monotonic() >= self._down_until:
            try:
                outcome = await self.redis.reserve(checks, now=now, token=token)
            except (RedisError, OSError) as exc:
                self._down_until = time.monotonic() + self._retry_s
                self._mark(True, exc)
            else:
                self._mark(False)
                return outcome
        return self._reserve_degraded(checks, now=now, token=token)

    def _reserve_degraded(self, checks: Sequence[Check], *, now: float, token: str) -> Outcome:
        kept: list[int] = []
        for i, check in enumerate(checks):
            if check.kind == "total":
                if check.limit is not None and self._budget_mode == "refuse":
                    raise StateUnavailable("budget")
                continue  # budgets are only counted in the shared store
            if self._rate_mode == "refuse":
                raise StateUnavailable("rate limit")
            if self._rate_mode == "local":
                kept.append(i)
        sub = self.local.reserve_now([checks[i] for i in kept], now=now, token=token)
        used = [0.0] * len(checks)
        wait = [0.0] * len(checks)
        for j, i in enumerate(kept):
            used[i], wait[i] = sub.used[j], sub.wait_s[j]
        if sub.allowed:
            self._local_tokens.add(token)
        denied = kept[sub.denied] if sub.denied is not None else None
        return Outcome(denied, tuple(used), tuple(wait))

    async def settle(self, adjustments: Sequence[Adjustment], *, token: str) -> None:
        if token in self._local_tokens:
            self._local_tokens.discard(token)
            self.local.settle_now([a for a in adjustments if a.kind != "total"], token=token)
            return
        try:
            await self.redis.settle(adjustments, token=token)
        except (RedisError, OSError) as exc:
            # The reservation stays counted (the safe side); leases expire by themselves.
            self._down_until = time.monotonic() + self._retry_s
            self._mark(True, exc)

    async def close(self) -> None:
        await self.redis.close()
