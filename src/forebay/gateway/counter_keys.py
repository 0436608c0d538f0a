"""Where each limit and budget is counted: counter names, and the calendar
periods (UTC days and months) budgets run over."""

from __future__ import annotations

import calendar
import functools
import time

from forebay.state.policy import Period, Subject, Unit


def period_bounds(period: Period, now: float) -> tuple[str, float, float]:
    """(id, start, end) of the UTC day or month containing `now`."""
    return _bounds(period, int(now // 60))  # the same for every second of a minute


@functools.lru_cache(maxsize=64)
def _bounds(period: Period, minute: int) -> tuple[str, float, float]:
    t = time.gmtime(minute * 60)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return time.strftime("%Y%m%d", t), float(start), float(start + 86400)
    start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    end = calendar.timegm((year, month, 1, 0, 0, 0))
    return time.strftime("%Y%m", t), float(start), float(end)


def counter_key(subject: Subject, tenant_id: str, name: str) -> str:
    # The {hash tag} keeps all of one tenant's counters in one Redis Cluster slot.
    return f"fb:{{t:{tenant_id}}}:{subject.tag}:{name}"


def budget_key(subject: Subject, tenant_id: str, unit: Unit, period: Period, now: float) -> str:
    # "b2": budgets became hashes with an epoch; counters under the old names are left to
    # expire, and the new ones start from the spend in the ledger.
    period_id, _, _ = period_bounds(period, now)
    return counter_key(subject, tenant_id, f"b2:{unit}:{period}:{period_id}")
