"""The admission pools of every alias, built once from the config: one
`Pool` per alias, with its routing policy and each class's override."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from forebay.config.settings import ModelAlias, Settings
from forebay.config.traffic import AdmissionConfig, TrafficClassConfig
from forebay.gateway.admission import Pool, Ticket
from forebay.gateway.health import DeploymentState
from forebay.gateway.routing import Policy, RouteRequest, make_policy, prefix_key
from forebay.upstreams.base import Upstream


@dataclass
class Traffic:
    pools: dict[str, Pool]
    models: Mapping[str, ModelAlias]
    classes: Mapping[str, TrafficClassConfig]
    admission: AdmissionConfig
    class_policies: dict[tuple[str, str], Policy]

    def uses_load_signals(self, alias: str) -> bool:
        if self.models[alias].routing.policy in ("least_loaded", "prefix_affinity"):
            return True
        return any(
            self.classes[c].policy in ("least_loaded", "prefix_affinity")
            for (a, c) in self.class_policies
            if a == alias
        )

    def ticket(self, alias: str, class_name: str, tenant: str, payload: dict[str, Any]) -> Ticket:
        cls = self.classes[class_name]
        routing = self.models[alias].routing
        policy = self.class_policies.get((alias, class_name))
        uses_prefix = routing.policy == "prefix_affinity" and policy is None
        route = RouteRequest(
            ttft_slo_s=cls.ttft_slo_ms / 1000,
            prefix_key=prefix_key(payload, routing.prefix_chars) if uses_prefix else b"",
        )
        return Ticket(
            class_name,
            cls,
            tenant,
            route,
            deadline=time.monotonic() + cls.deadline_ms / 1000,
            policy=policy,
        )


def build_traffic(
    settings: Settings,
    upstreams_by_alias: Mapping[str, list[Upstream]],
    *,
    on_shed: Callable[[str, str], None] = lambda alias, cls: None,
    on_eject: Callable[[str], None] = lambda name: None,
) -> Traffic:
    pools: dict[str, Pool] = {}
    class_policies: dict[tuple[str, str], Policy] = {}
    for alias, model in settings.models.items():
        states = [
            DeploymentState.for_upstream(u, settings.resilience)
            for u in upstreams_by_alias.get(alias, [])
        ]
        routing = model.routing
        pools[alias] = Pool(
            alias,
            states,
            make_policy(routing.policy, max_imbalance=routing.max_imbalance),
            settings.admission,
            on_shed=lambda cls, a=alias: on_shed(a, cls),  # type: ignore[misc]
            on_eject=on_eject,
            top_priority=min(c.priority for c in settings.classes.values()),
        )
        if not settings.admission.enabled:
            continue
        for name, cls in settings.classes.items():
            if cls.policy is not None and cls.policy != routing.policy:
                class_policies[(alias, name)] = make_policy(
                    cls.policy, max_imbalance=routing.max_imbalance
                )
    return Traffic(pools, settings.models, settings.classes, settings.admission, class_policies)
