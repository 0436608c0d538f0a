"""Usage summaries for the CLI and the admin API."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, case, func, select

from forebay.db.schema import tenants, usage_events

GroupBy = Literal["tenant", "model", "deployment", "key"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """'24h', '7d', '30m', or a Unix time; returns a Unix time."""
    now = time.time() if now is None else now
    m = _DURATION.match(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"--since takes a duration like 30m, 24h, 7d or a Unix time, not {text!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    energy_wh: float
    avg_latency_ms: float


def summarize(engine: Engine, *, since: float, by: GroupBy) -> list[UsageRow]:
    ue = usage_events
    group_col = {
        "tenant": func.coalesce(tenants.c.name, ue.c.tenant_id, "(no tenant)"),
        "model": func.coalesce(ue.c.alias, "(no model)"),
        "deployment": func.coalesce(ue.c.deployment, "(none)"),
        "key": func.coalesce(ue.c.key_id, "(no key)"),
    }[by]
    query = (
        select(
            group_col.label("grp"),
            func.count().label("requests"),
            func.sum(case((ue.c.status >= 400, 1), else_=0)).label("errors"),
            func.sum(ue.c.prompt_tokens).label("prompt"),
            func.sum(ue.c.completion_tokens).label("completion"),
            func.sum(ue.c.cost_usd).label("cost"),
            func.sum(ue.c.energy_wh).label("energy"),
            func.avg(ue.c.latency_ms).label("lat"),
        )
        .select_from(ue.outerjoin(tenants, ue.c.tenant_id == tenants.c.id))
        .where(ue.c.ts >= since)
        .group_by(group_col)
        .order_by(func.sum(ue.c.cost_usd).desc(), func.count().desc())
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        UsageRow(
            group=str(r.grp),
            requests=int(r.requests),
            errors=int(r.errors or 0),
            prompt_tokens=int(r.prompt or 0),
            completion_tokens=int(r.completion or 0),
            cost_usd=float(r.cost or 0.0),
            energy_wh=float(r.energy or 0.0),
            avg_latency_ms=float(r.lat or 0.0),
        )
        for r in rows
    ]
