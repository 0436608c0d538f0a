"""Limit policies in the database, and the spend already in the ledger.

Read on refresh (never per request). Spend is read from the ledger so that a
budget counter created after a restart, or in a fresh Redis, starts from what
the tenant or key has really spent this day or month. Every change bumps the
change counter in its own transaction, so other replicas pick it up at once
(see `forebay.db.changes`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from forebay.db.changes import bump
from forebay.db.schema import api_keys, limits, tenants, usage_daily, usage_events
from forebay.errors import TenancyError
from forebay.state.policy import LimitPolicy, Scope, patch_policy
from forebay.tenancy.names import ID_CHARS, REF_CHARS, checked


class SpendRow(NamedTuple):
    tenant_id: str
    key_id: str
    day: int  # days since the Unix epoch, UTC
    usd: float
    tokens: int


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def resolve(self, scope: Scope, ref: str) -> tuple[str, str]:
        """A tenant (id or name) or key id → (subject id, tenant id)."""
        if scope == "tenant":
            checked(ref, "a tenant id or name", REF_CHARS)
        else:
            checked(ref, "a key id", ID_CHARS)
        with self._engine.connect() as conn:
            if scope == "tenant":
                row = conn.execute(
                    select(tenants.c.id).where((tenants.c.id == ref) | (tenants.c.name == ref))
                ).first()
                if row is None:
                    raise TenancyError(f"no tenant with id or name '{ref[:60]}'")
                return row.id, row.id
            key = conn.execute(
                select(api_keys.c.id, api_keys.c.tenant_id).where(api_keys.c.id == ref)
            ).first()
        if key is None or key.tenant_id is None:
            raise TenancyError(f"no tenant key with id '{ref[:60]}'")
        return key.id, key.tenant_id

    def set(self, scope: Scope, subject_id: str, policy: LimitPolicy) -> None:
        with self._engine.begin() as conn:
            _write(conn, scope, subject_id, policy)

    def update(self, scope: Scope, subject_id: str, patch: Mapping[str, Any]) -> LimitPolicy:
        """Change only the limits `patch` names (a JSON merge patch; null removes
        one), read and written in one transaction so concurrent updates of
        different limits both land."""
        where = (limits.c.scope == scope) & (limits.c.subject_id == subject_id)
        with self._engine.begin() as conn:
            row = conn.execute(select(limits.c.policy).where(where).with_for_update()).first()
            current = LimitPolicy.model_validate_json(row.policy) if row else None
            policy = patch_policy(current, patch)
            _write(conn, scope, subject_id, policy)
        return policy

    def clear(self, scope: Scope, subject_id: str) -> bool:
        with self._engine.begin() as conn:
            cleared = bool(
                conn.execute(
                    delete(limits).where(
                        (limits.c.scope == scope) & (limits.c.subject_id == subject_id)
                    )
                ).rowcount
            )
            if cleared:
                bump(conn)
        return cleared

    def get(self, scope: Scope, subject_id: str) -> LimitPolicy | None:
        return self.all().get((scope, subject_id))

    def all(self) -> dict[tuple[Scope, str], LimitPolicy]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(limits)).all()
        return {
            (row.scope, row.subject_id): LimitPolicy.model_validate_json(row.policy) for row in rows
        }

    def budget_spend(
        self, tenant_ids: Collection[str], key_ids: Collection[str], since_day: int
    ) -> list[SpendRow]:
        """Spend per (tenant, key, UTC day) from `since_day` (days since the epoch) on, for
        the tenants and keys given: from the daily rollups, which the ledger writer keeps
        in the same transaction as the events, so a read costs rows per key and day, not
        per request."""
        if not tenant_ids and not key_ids:
            return []
        c = usage_daily.c
        query = (
            select(
                c.tenant_id,
                c.key_id,
                c.day,
                func.sum(c.cost_usd),
                func.sum(c.prompt_tokens + c.completion_tokens),
            )
            .where(
                (c.day >= since_day)
                & (c.tenant_id.in_(list(tenant_ids)) | c.key_id.in_(list(key_ids)))
            )
            .group_by(c.tenant_id, c.key_id, c.day)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [SpendRow(r[0], r[1], int(r[2]), float(r[3] or 0), int(r[4] or 0)) for r in rows]

    def recorded(self, request_ids: Sequence[str], since: float) -> frozenset[str]:
        """Which of these requests (none started before `since`) have a ledger row."""
        found: list[str] = []
        c = usage_events.c
        with self._engine.connect() as conn:
            for i in range(0, len(request_ids), 500):
                chunk = list(request_ids[i : i + 500])
                query = select(c.request_id).where((c.ts >= since) & c.request_id.in_(chunk))
                found.extend(conn.execute(query).scalars())
        return frozenset(found)

    def spent(self, scope: Scope, subject_id: str, since: float) -> tuple[float, int]:
        """($, tokens) recorded in the ledger since `since`."""
        column = usage_events.c.tenant_id if scope == "tenant" else usage_events.c.key_id
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    func.coalesce(func.sum(usage_events.c.cost_usd), 0.0),
                    func.coalesce(
                        func.sum(usage_events.c.prompt_tokens + usage_events.c.completion_tokens),
                        0,
                    ),
                ).where((column == subject_id) & (usage_events.c.ts >= since))
            ).one()
        return float(row[0]), int(row[1])


def _write(conn: Connection, scope: Scope, subject_id: str, policy: LimitPolicy) -> None:
    """Upsert one policy and bump the change counter, in the caller's transaction."""
    doc = orjson.dumps(policy.model_dump(exclude_none=True)).decode()
    now = time.time()
    where = (limits.c.scope == scope) & (limits.c.subject_id == subject_id)
    if not conn.execute(update(limits).where(where).values(policy=doc, updated_at=now)).rowcount:
        conn.execute(
            insert(limits).values(scope=scope, subject_id=subject_id, policy=doc, updated_at=now)
        )
    bump(conn)
