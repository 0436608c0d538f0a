"""What a tenant or key may spend: rate limits and budgets, as set by an admin.

A policy is stored as JSON (one row per tenant or key), validated here, and
held in memory by every replica; the request path never reads the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
