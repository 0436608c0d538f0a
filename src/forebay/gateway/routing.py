"""Stage 4: which deployment serves the request, and why.

The core policy is ordered fallback: deployments in the order the config lists
them, skipping those that cannot take requests now. Every choice carries a
reason that ends up in the `x-forebay-route` header and the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from forebay.upstreams.base import Upstream


@dataclass(frozen=True, slots=True)
class RouteChoice:
    upstream: Upstream
    policy: str
    skipped: tuple[str, ...] = ()

    def reason(self, failed: Sequence[str] = ()) -> str:
        notes = [*self.skipped, *failed]
        name = self.upstream.deployment.name
        return f"{self.policy}: {name}" + (f" ({'; '.join(notes)})" if notes else "")


class Router:
    def __init__(self, upstreams_by_alias: Mapping[str, Sequence[Upstream]]) -> None:
        self._by_alias = {alias: tuple(ups) for alias, ups in upstreams_by_alias.items()}

    def plan(self, alias: str) -> list[RouteChoice]:
        """Candidates in the order to try them; empty when none is ready."""
        choices: list[RouteChoice] = []
        skipped: list[str] = []
        for up in self._by_alias.get(alias, ()):
            if up.ready():
                choices.append(RouteChoice(up, "ordered", tuple(skipped)))
            else:
                skipped.append(f"{up.deployment.name} skipped: not ready")
        return choices

    def deployments(self, alias: str) -> tuple[Upstream, ...]:
        return self._by_alias.get(alias, ())
