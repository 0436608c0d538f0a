"""Failed authentication: counted, summarised, throttled per source address,
and never one ledger row each (one anonymous client once wrote 4,561 rows/s).

Every failure increments a counter by reason (missing, malformed, invalid:
unknown or revoked) and the totals of the current interval, which the app logs
as one line per interval with the number of distinct sources. A log line
rather than a table: it costs no database write per failure (an aggregated
table would still take one write per interval per replica, for data that
metrics already hold), and it is where an operator looks when something is
probing them.

After `max_failures` failures within `window_s` from one address, every request
from it (with any key, valid or not) gets a 429 with Retry-After for
`window_s`. Both tables are bounded by `max_sources`, dropping their oldest
entry, so an attacker rotating addresses cannot grow memory without bound (it
can only push older addresses out early). Authenticated traffic pays nothing
while no address is blocked (an empty dict's truth test) and one dict lookup
while some are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from forebay.config.schema import AuthThrottleConfig
from forebay.errors import ForebayError
from forebay.telemetry.metrics import Metrics

Reason = Literal["missing", "malformed", "invalid"]
REASONS: tuple[Reason, ...] = ("missing", "malformed", "invalid")


@dataclass(slots=True)
class Summary:
    """Failures since the last summary."""

    by_reason: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    sources: set[str] = field(default_factory=set)  # at most max_sources of them
    throttled: int = 0

    @property
    def failures(self) -> int:
        return sum(self.by_reason.values())


class FailedAuth:
    def __init__(
        self,
        config: AuthThrottleConfig | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config or AuthThrottleConfig(enabled=False)
        self._metrics = metrics
        self._clock = clock
        self.blocked: dict[str, float] = {}  # source -> refused until (clock)
        self._windows: dict[str, list[float]] = {}  # source -> [window start, failures]
        self._summary = Summary()
        if metrics is not None:
            self._counters = {r: metrics.auth_failures.labels(r) for r in REASONS}
            metrics.auth_throttled_sources.set_function(lambda: len(self.blocked))

    def check(self, source: str) -> None:
        """Raise the 429 if `source` is blocked. Call only when `blocked` is not empty."""
        until = self.blocked.get(source)
        if until is None:
            return
        now = self._clock()
        if now >= until:
            del self.blocked[source]
            return
        self._summary.throttled += 1
        if self._metrics is not None:
            self._metrics.auth_throttled.inc()
        wait = max(1, math.ceil(until - now))
        raise ForebayError(
            429,
            f"Too many requests with a missing or invalid API key from your address; "
            f"retry in {wait} s with a valid key.",
            type="rate_limit_error",
            code="too_many_auth_failures",
            headers={"retry-after": str(wait)},
        )

    def failed(self, source: str, reason: Reason) -> None:
        if self._metrics is not None:
            self._counters[reason].inc()
        summary = self._summary
        summary.by_reason[reason] += 1
        cfg = self._config
        if len(summary.sources) < cfg.max_sources:
            summary.sources.add(source)
        if not cfg.enabled:
            return
        now = self._clock()
        window = self._windows.get(source)
        if window is None or now - window[0] >= cfg.window_s:
            if window is None and len(self._windows) >= cfg.max_sources:
                del self._windows[next(iter(self._windows))]  # the oldest
            window = self._windows[source] = [now, 0.0]
        window[1] += 1
        if window[1] >= cfg.max_failures:
            del self._windows[source]
            if source not in self.blocked and len(self.blocked) >= cfg.max_sources:
                del self.blocked[next(iter(self.blocked))]
            self.blocked[source] = now + cfg.window_s

    def take_summary(self) -> Summary:
        """The totals since the last call, starting new ones; forgets blocks that
        have run out, so that authenticated traffic is back to no lookup at all."""
        now = self._clock()
        for source in [s for s, until in self.blocked.items() if until <= now]:
            del self.blocked[source]
        summary, self._summary = self._summary, Summary()
        return summary

    @property
    def tracked(self) -> int:
        return len(self._windows) + len(self.blocked)
