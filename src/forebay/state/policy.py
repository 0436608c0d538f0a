"""What a tenant or key may spend: rate limits and budgets, as set by an admin.

A policy is stored as JSON (one row per tenant or key), validated here, and
held in memory by every replica; the request path never reads the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["tenant", "key"]
Period = Literal["day", "month"]
Unit = Literal["usd", "tokens"]


class Budget(BaseModel):
    """A hard limit refuses requests; the soft threshold only warns."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hard: float | None = Field(None, gt=0)
    soft: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Budget:
        if self.hard is None and self.soft is None:
            raise ValueError("a budget needs 'hard', 'soft' or both")
        if self.hard is not None and self.soft is not None and self.soft > self.hard:
            raise ValueError("'soft' must not be above 'hard'")
        return self


class LimitPolicy(BaseModel):
    """Per-minute rates are sliding 60-second windows; budgets are calendar
    days and months in UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(
        None, ge=1, description="tokens per minute: prompt + max_tokens reserved, then settled"
    )
    concurrent: int | None = Field(None, ge=1, description="requests in flight")
    usd_per_day: Budget | None = None
    usd_per_month: Budget | None = None
    tokens_per_day: Budget | None = None
    tokens_per_month: Budget | None = None

    def budgets(self) -> list[tuple[Unit, Period, Budget]]:
        found: list[tuple[Unit, Period, Budget]] = []
        for unit in ("usd", "tokens"):
            for period in ("day", "month"):
                budget = getattr(self, f"{unit}_per_{period}")
                if budget is not None:
                    found.append((unit, period, budget))
        return found

    @property
    def empty(self) -> bool:
        return self == LimitPolicy()


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose counters: a tenant or a key, with a name people recognise."""

    scope: Scope
    id: str
    label: str

    @property
    def tag(self) -> str:
        return f"{self.scope}:{self.id}"


@dataclass
class PolicyBook:
    """Every policy, by (scope, id); replaced wholesale on refresh."""

    policies: dict[tuple[Scope, str], LimitPolicy] = field(default_factory=dict)

    def replace(self, policies: dict[tuple[Scope, str], LimitPolicy]) -> None:
        self.policies = policies

    def get(self, scope: Scope, subject_id: str | None) -> LimitPolicy | None:
        if subject_id is None:
            return None
        return self.policies.get((scope, subject_id))


def patch_policy(current: LimitPolicy | None, patch: Mapping[str, Any]) -> LimitPolicy:
    """`current` with a JSON merge patch (RFC 7396) applied: only the limits the
    patch names change, null removes one, and a budget left with neither hard
    nor soft is removed. Raises pydantic's ValidationError for a bad result."""
    merged = _merge(current.model_dump(exclude_none=True) if current else {}, patch)
    return LimitPolicy.model_validate({k: v for k, v in merged.items() if v != {}})


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result
