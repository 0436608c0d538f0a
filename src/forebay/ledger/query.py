"""Usage summaries for the CLI and the admin API.

A window `ts >= since` is answered in three disjoint parts, in one statement
(so one snapshot on PostgreSQL):

    raw events     since            .. the first whole hour   (< 1 hour of rows)
    usage_hourly   that hour        .. the first whole day    (< 24 buckets)
    usage_daily    that day         .. now, and anything later

Buckets are UTC hours and days since the Unix epoch; the writer adds each
batch to them in the same transaction as the events, so the answer is exactly
what `summarize_raw` computes over the events (sums of floats may differ in the
last bits, being added in another order). A missing tenant, key, model or
deployment and an empty one are the same group.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, FromClause, Select, case, func, select, union_all

from forebay.db.schema import tenants, usage_events
from forebay.ledger.rollups import DAILY, HOURLY, Rollup

GroupBy = Literal["tenant", "model", "deployment", "key", "protocol"]
GROUPINGS: tuple[GroupBy, ...] = ("tenant", "model", "deployment", "key", "protocol")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# The Unix time of 9999-12-31T23:59:59Z: past it, a "since" is a typo, and
# beyond ~2**63 it no longer fits an SQL integer bucket.
LATEST_SINCE = 253_402_300_799.0


def parse_since(text: str, now: float | None = None) -> float:
    """'24h', '7d', '30m', or a Unix time; returns a Unix time between the
    epoch and year 9999, so every value is one the database can compare."""
    now = time.time() if now is None else now
    hint = "since takes a duration like 30m, 24h, 7d or a Unix time"
    text = text.strip()
    m = _DURATION.match(text)
    if m:
        since = now - float(m.group(1)) * _UNIT[m.group(2)]
        if not since >= 0:
            raise ValueError(f"{hint}; {text[:40]!r} reaches back before 1970")
        return since
    try:
        since = float(text)
    except ValueError:
        raise ValueError(f"{hint}, not {text[:40]!r}") from None
    if not 0 <= since <= LATEST_SINCE:  # also refuses nan and inf
        raise ValueError(f"{hint}; a Unix time must be between 0 and {LATEST_SINCE:.0f}")
    return since


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: str
    requests: int
    errors: int
    prompt_tokens: int  # every input token, cached ones included
    completion_tokens: int  # reasoning tokens included
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float
    energy_wh: float
    avg_latency_ms: float


def summarize(engine: Engine, *, since: float, by: GroupBy) -> list[UsageRow]:
    """Usage since `since` (a Unix time) grouped by `by`, most expensive first;
    reads rollups for whole hours and days, raw events only for the rest."""
    first_hour = HOURLY.first_whole_bucket(since)
    first_day = DAILY.first_whole_bucket(since)
    ue = usage_events
    raw = _grouped(
        ue,
        by,
        count=func.count(),
        errors=func.sum(case((ue.c.status >= 400, 1), else_=0)),
        latency=func.sum(ue.c.latency_ms),
    ).where(ue.c.ts >= since, ue.c.ts < first_hour * HOURLY.width_s)
    hourly = _from_rollup(HOURLY, by).where(
        HOURLY.bucket >= first_hour,
        HOURLY.bucket < first_day * (DAILY.width_s // HOURLY.width_s),
    )
    daily = _from_rollup(DAILY, by).where(DAILY.bucket >= first_day)
    parts = union_all(raw, hourly, daily).subquery()
    query = select(
        parts.c.grp,
        func.sum(parts.c.requests).label("requests"),
        func.sum(parts.c.errors).label("errors"),
        func.sum(parts.c.prompt).label("prompt"),
        func.sum(parts.c.completion).label("completion"),
        func.sum(parts.c.cache_read).label("cache_read"),
        func.sum(parts.c.cache_write).label("cache_write"),
        func.sum(parts.c.reasoning).label("reasoning"),
        func.sum(parts.c.cost).label("cost"),
        func.sum(parts.c.energy).label("energy"),
        func.sum(parts.c.latency).label("latency"),
    ).group_by(parts.c.grp)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    # `latency` is a sum here (rollups add up), an average in summarize_raw.
    return _ordered(
        _usage_row(r, float(r.latency or 0.0) / int(r.requests)) for r in rows if r.requests
    )


def summarize_raw(engine: Engine, *, since: float, by: GroupBy) -> list[UsageRow]:
    """The same summary computed from the raw events alone: the reference that
    `summarize` must equal, and the baseline in bench/ledger_scale.py."""
    ue = usage_events
    query = _grouped(
        ue,
        by,
        count=func.count(),
        errors=func.sum(case((ue.c.status >= 400, 1), else_=0)),
        latency=func.avg(ue.c.latency_ms),
    ).where(ue.c.ts >= since)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return _ordered(_usage_row(r, float(r.latency or 0.0)) for r in rows)


def _from_rollup(rollup: Rollup, by: GroupBy) -> Select[Any]:
    t = rollup.table
    return _grouped(
        t,
        by,
        count=func.sum(t.c.requests),
        errors=func.sum(t.c.errors),
        latency=func.sum(t.c.latency_ms_sum),
    )


def _grouped(
    src: FromClause,
    by: GroupBy,
    *,
    count: ColumnElement[Any],
    errors: ColumnElement[Any],
    latency: ColumnElement[Any],
) -> Select[Any]:
    """Sums over `src` (the events or a rollup: same column names) per group."""
    c = src.c
    group_col = {
        "tenant": func.coalesce(tenants.c.name, func.nullif(c.tenant_id, ""), "(no tenant)"),
        "model": func.coalesce(func.nullif(c.alias, ""), "(no model)"),
        "deployment": func.coalesce(func.nullif(c.deployment, ""), "(none)"),
        "key": func.coalesce(func.nullif(c.key_id, ""), "(no key)"),
        "protocol": c.protocol,
    }[by]
    joined = src.outerjoin(tenants, c.tenant_id == tenants.c.id) if by == "tenant" else src
    return (
        select(
            group_col.label("grp"),
            count.label("requests"),
            errors.label("errors"),
            func.sum(c.prompt_tokens).label("prompt"),
            func.sum(c.completion_tokens).label("completion"),
            func.sum(c.cache_read_tokens).label("cache_read"),
            func.sum(c.cache_write_tokens).label("cache_write"),
            func.sum(c.reasoning_tokens).label("reasoning"),
            func.sum(c.cost_usd).label("cost"),
            func.sum(c.energy_wh).label("energy"),
            latency.label("latency"),
        )
        .select_from(joined)
        .group_by(group_col)
    )


def _ordered(rows: Iterable[UsageRow]) -> list[UsageRow]:
    return sorted(rows, key=lambda r: (-r.cost_usd, -r.requests, r.group))


def _usage_row(r: Any, avg_latency_ms: float) -> UsageRow:  # an SQL result row
    return UsageRow(
        group=str(r.grp),
        requests=int(r.requests),
        errors=int(r.errors or 0),
        prompt_tokens=int(r.prompt or 0),
        completion_tokens=int(r.completion or 0),
        cache_read_tokens=int(r.cache_read or 0),
        cache_write_tokens=int(r.cache_write or 0),
        reasoning_tokens=int(r.reasoning or 0),
        cost_usd=float(r.cost or 0.0),
        energy_wh=float(r.energy or 0.0),
        avg_latency_ms=avg_latency_ms,
    )
