"""Stage 5: which deployment serves the request, and why.

A policy picks among the deployments of an alias that are available (ready,
not ejected, not cooling down after a 429) and have a free concurrency slot.
Every pick carries a reason for the `x-forebay-route` header and the ledger,
e.g. `cheapest-within-slo: gpt-small (premium skipped: p95 over SLO)`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from forebay.config.traffic import PolicyName
from forebay.gateway.health import DeploymentState


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a policy may look at: the class's TTFT objective and the prompt prefix."""

    ttft_slo_s: float
    prefix_key: bytes


@dataclass(frozen=True, slots=True)
class Pick:
    state: DeploymentState
    policy: str
    notes: tuple[str, ...] = ()

    def reason(self, extra: Sequence[str] = ()) -> str:
        notes = [*self.notes, *extra]
        head = f"{self.policy}: {self.state.name}"
        return head + (f" ({'; '.join(notes)})" if notes else "")


class Policy(Protocol):
    name: str

    def choose(self, candidates: Sequence[DeploymentState], req: RouteRequest) -> Pick: ...


class Ordered:
    name = "ordered"

    def choose(self, candidates: Sequence[DeploymentState], req: RouteRequest) -> Pick:
        return Pick(candidates[0], self.name)


class Weighted:
    """Smooth weighted round-robin (as nginx does): exact shares, no randomness."""

    name = "weighted"

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def choose(self, candidates: Sequence[DeploymentState], req: RouteRequest) -> Pick:
        total = sum(c.upstream.deployment.weight for c in candidates)
        best = candidates[0]
        for c in candidates:
            self._current[c.name] = self._current.get(c.name, 0.0) + c.upstream.deployment.weight
            if self._current[c.name] > self._current.get(best.name, 0.0):
                best = c
        self._current[best.name] -= total
        return Pick(best, self.name)


class LeastLoaded:
    """Fewest requests in flight, or the upstream's own count of running plus
    waiting requests when it reports more (vLLM /metrics, llama.cpp)."""

    name = "least-loaded"

    def choose(self, candidates: Sequence[DeploymentState], req: RouteRequest) -> Pick:
        best = min(candidates, key=lambda c: c.load() / c.upstream.deployment.weight)
        return Pick(best, self.name)


def _price(state: DeploymentState) -> float:
    dep = state.upstream.deployment
    return dep.usd_per_input_token + dep.usd_per_output_token


class CheapestWithinSlo:
    """The cheapest deployment whose observed p95 TTFT meets the class's
    objective (one without enough samples yet counts as meeting it); if none
    does, the fastest."""

    name = "cheapest-within-slo"

    def choose(self, candidates: Sequence[DeploymentState], req: RouteRequest) -> Pick:
        notes = []
        within = []
        for c in sorted(candidates, key=_price):
            p95 = c.ttft_p95_s()
            if p95 is None or p95 <= req.ttft_slo_s:
                within.append(c)
            elif not within:
                notes.append(f"{c.name} skipped: p95 over SLO")
        if within:
            return Pick(within[0], self.name, tuple(notes))
        fastest = min(candidates, key=lambda c: c.ttft_p95_s() or 0.0)
        return Pick(fastest, self.name, ("none within SLO: fastest",))


class PrefixAffinity:
    """Requests sharing a prompt prefix go to the same deployment, whose KV
    cache already holds it (rendezvous hashing, so adding or losing a
    deployment moves only its share). Yields to the least loaded when the
    preferred one is over `max_imbalance` times the mean load."""

    name = "prefix-affinity"

    def __init__(self, max_imbalance: float) -> None:
        self._max_imbalance = max_imbalance

    def choose(self, candidates: Sequence[DeploymentState], req: RouteRequest) -> Pick:
        def score(c: DeploymentState) -> bytes:
            return hashlib.blake2b(req.prefix_key + c.name.encode(), digest_size=8).digest()

        preferred = max(candidates, key=score)
        # Consistent hashing with bounded loads: no deployment takes more than
        # ceil(max_imbalance x the mean load, counting this request).
        total = sum(c.load() for c in candidates) + 1
        bound = math.ceil(self._max_imbalance * total / len(candidates))
        if len(candidates) > 1 and preferred.load() + 1 > bound:
            other = min(candidates, key=lambda c: c.load())
            return Pick(other, self.name, (f"{preferred.name} over load guard",))
        return Pick(preferred, self.name)


def make_policy(name: PolicyName, *, max_imbalance: float = 1.5) -> Policy:
    if name == "weighted":
        return Weighted()
    if name == "least_loaded":
        return LeastLoaded()
    if name == "cheapest_within_slo":
        return CheapestWithinSlo()
    if name == "prefix_affinity":
        return PrefixAffinity(max_imbalance)
    return Ordered()


def prefix_key(payload: dict[str, Any], chars: int) -> bytes:
    """The first `chars` characters of the prompt, in the order a server's KV
    cache holds it: the system prompt first (Messages' top-level `system`,
    Responses' `instructions`), then the messages (Responses' `input`)."""
    parts: list[str] = []
    size = 0
    for value in _prompt_parts(payload):
        text = value if isinstance(value, str) else str(value)
        parts.append(text)
        size += len(text)
        if size >= chars:
            break
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    return "\x00".join(parts)[:chars].encode("utf-8", "surrogatepass")


def _prompt_parts(payload: dict[str, Any]) -> Iterator[Any]:
    for lead in (payload.get("instructions"), payload.get("system")):
        if lead:
            yield _text_of(lead)
    turns = payload.get("messages")
    if turns is None:
        turns = payload.get("input")
        if isinstance(turns, str):
            yield turns
            return
    if isinstance(turns, list):
        for msg in turns:
            content = msg.get("content") if isinstance(msg, dict) else None
            yield _text_of(content) if content else ""


def _text_of(content: Any) -> Any:
    """A list of content parts keys as its text, so the same words key the same
    whether sent as a string or as parts (as a continued Responses conversation,
    encoded from the store, sends its first turn)."""
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return content
