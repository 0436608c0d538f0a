"""Limit policies in the database, and the spend already in the ledger.

Read on refresh (never per request). Spend is read from the ledger so that a
budget counter created after a restart, or in a fresh Redis, starts from what
the tenant or key has really spent this day or month.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, insert, select, update

from forebay.db.schema import api_keys, limits, tenants, usage_events
from forebay.errors import TenancyError
from forebay.state.policy import LimitPolicy, Scope, patch_policy


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def resolve(self, scope: Scope, ref: str) -> tuple[str, str]:
        """A tenant (id or name) or key id → (subject id, tenant id)."""
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
        doc = orjson.dumps(policy.model_dump(exclude_none=True)).decode()
        now = time.time()
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(limits)
                .where((limits.c.scope == scope) & (limits.c.subject_id == subject_id))
                .values(policy=doc, updated_at=now)
            ).rowcount
            if not changed:
                conn.execute(
                    insert(limits).values(
                        scope=scope, subject_id=subject_id, policy=doc, updated_at=now
                    )
                )

    def update(self, scope: Scope, subject_id: str, patch: Mapping[str, Any]) -> LimitPolicy:
        """Change only the limits `patch` names (a JSON merge patch; null removes
        one), read and written in one transaction so concurrent updates of
        different limits both land."""
        now = time.time()
        where = (limits.c.scope == scope) & (limits.c.subject_id == subject_id)
        with self._engine.begin() as conn:
            row = conn.execute(select(limits.c.policy).where(where).with_for_update()).first()
            current = LimitPolicy.model_validate_json(row.policy) if row else None
            policy = patch_policy(current, patch)
            doc = orjson.dumps(policy.model_dump(exclude_none=True)).decode()
            if row is not None:
                conn.execute(update(limits).where(where).values(policy=doc, updated_at=now))
            else:
                conn.execute(
                    insert(limits).values(
                        scope=scope, subject_id=subject_id, policy=doc, updated_at=now
                    )
                )
        return policy

    def clear(self, scope: Scope, subject_id: str) -> bool:
        with self._engine.begin() as conn:
            return bool(
                conn.execute(
                    delete(limits).where(
                        (limits.c.scope == scope) & (limits.c.subject_id == subject_id)
                    )
                ).rowcount
            )

    def get(self, scope: Scope, subject_id: str) -> LimitPolicy | None:
        return self.all().get((scope, subject_id))

    def all(self) -> dict[tuple[Scope, str], LimitPolicy]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(limits)).all()
        return {
            (row.scope, row.subject_id): LimitPolicy.model_validate_json(row.policy) for row in rows
        }

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
