"""Stage 3: rate limits and budgets, per key and per tenant.

Before dispatch, one atomic reservation covers every counter the request
touches: requests and tokens per minute (prompt tokens + max_tokens), the
concurrency slot, and $ and token budgets per day and month. After the request,
its reservation is settled with the real counts, off the response path.
Reservations are upper bounds, so concurrent requests can never spend past a
hard budget: the prompt is bounded per deployment (text bytes plus chat-template
tokens; each image, audio and file part at that deployment's configured bound;
a part of unknown type at its context size), the output by max_tokens (set to
`limits.default_output_reserve` when a limited caller leaves it out), and the
reservation is the most any deployment of the alias could cost (twice the
prompt when the request may be hedged, since the losing try is paid for too),
each prompt token at the dearest of the input, cache-read and cache-write
prices. Settlement charges what the recorder priced (metering.cost_usd: cached
and cache-written tokens at their own prices, reasoning as output).
Budget checks carry the spend to start from if their counter is missing (see
`spend`). Callers without any policy skip this stage entirely.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from forebay.config.schema import LimitsConfig
from forebay.config.settings import ModelAlias
from forebay.errors import ForebayError

# period_bounds is re-exported: cli/limits.py reads it from here.
from forebay.gateway.counter_keys import budget_key, counter_key
from forebay.gateway.counter_keys import period_bounds as period_bounds
from forebay.gateway.metering import input_price_bound, prompt_shape
from forebay.gateway.recorder import Exchange
from forebay.gateway.responses import prompt_body
from forebay.gateway.spend import SpendTracker
from forebay.gateway.validate import ParsedRequest, max_output_tokens
from forebay.state.counters import Adjustment, Check, CounterStore, InProcessCounters, Outcome
from forebay.state.failover import StateUnavailable
from forebay.state.policy import LimitPolicy, PolicyBook, Subject
from forebay.telemetry.metrics import Metrics
from forebay.tenancy.keys import Principal
from forebay.upstreams.base import Endpoint, WireProtocol

log = logging.getLogger("forebay.limits")


@dataclass(frozen=True, slots=True)
class Labelled:
    """A check, with what it means, to explain a refusal or fill headers."""

    check: Check
    subject: Subject
    name: str  # "requests", "tokens", "concurrent", "usd_per_day", ...
    soft: float | None = None


class Limiter:
    def __init__(
        self,
        book: PolicyBook,
        store: CounterStore,
        config: LimitsConfig,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.store = store
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()
        self.spend = SpendTracker(clock)

    def subjects(self, p: Principal) -> list[tuple[Subject, LimitPolicy]]:
        found: list[tuple[Subject, LimitPolicy]] = []
        if p.tenant_id is None:
            return found
        tenant_policy = self.book.get("tenant", p.tenant_id)
        if tenant_policy is not None:
            found.append(
                (Subject("tenant", p.tenant_id, p.tenant_name or p.tenant_id), tenant_policy)
            )
        key_policy = self.book.get("key", p.key_id)
        if key_policy is not None:
            found.append((Subject("key", p.key_id, p.key_id), key_policy))
        return found

    def checks_for(
        self,
        subjects: list[tuple[Subject, LimitPolicy]],
        tenant_id: str,
        *,
        tokens: float,
        usd: float,
        now: float,
    ) -> list[Labelled]:
        lease = self._config.concurrency_lease_s
        out: list[Labelled] = []
        for subject, policy in subjects:

            def key(name: str, s: Subject = subject) -> str:
                return counter_key(s, tenant_id, name)

            if policy.rpm is not None:
                out.append(
                    Labelled(Check("window", key("rpm"), policy.rpm, 1), subject, "requests")
                )
            if policy.tpm is not None:
                out.append(
                    Labelled(Check("window", key("tpm"), policy.tpm, tokens), subject, "tokens")
                )
            if policy.concurrent is not None:
                check = Check("lease", key("concurrent"), policy.concurrent, 1, ttl_s=lease)
                out.append(Labelled(check, subject, "concurrent"))
            for unit, period, budget in policy.budgets():
                _, _, end = period_bounds(period, now)
                name = budget_key(subject, tenant_id, unit, period, now)
                check = Check(
                    "total",
                    name,
                    budget.hard,
                    usd if unit == "usd" else tokens,
                    ttl_s=end - now,
                    seed=self.spend.seed(name),
                )
                out.append(Labelled(check, subject, f"{unit}_per_{period}", soft=budget.soft))
        return out

    async def admit(
        self, ex: Exchange, model: ModelAlias, req: ParsedRequest, *, hedged: bool = False
    ) -> None:
        """Reserve, or raise the 429 (or 503) that explains why not."""
        p = ex.principal
        if p is None or p.tenant_id is None:
            return
        subjects = self.subjects(p)
        if not subjects:
            return
        output = 0
        if ex.endpoint is not Endpoint.EMBEDDINGS:
            asked = max_output_tokens(req.payload)
            if asked is None and req.canonical is not None:
                asked = req.canonical.max_output_tokens  # Responses' max_output_tokens
            if asked is None:
                # The reservation must bound what the upstream may generate.
                asked = self._config.default_output_reserve
                _cap_output(req, asked)
            # A cap of 0 may still yield a token on some servers (llama.cpp).
            output = max(asked, 1) * _choices(req)
        tokens, usd = _upper_bounds(req, model, output, hedged)
        now = self._clock()
        checks = self.checks_for(subjects, p.tenant_id, tokens=tokens, usd=usd, now=now)
        outcome, headers = await self._reserve(p, checks, now, ex.request_id)
        headers.update(self._soft_warnings(checks, outcome, now))
        ex.headers.update(headers)
        bucket = math.floor(now)

        epochs = outcome.epochs or ("",) * len(checks)

        def settle(prompt_used: int, completion_used: int, cost: float) -> None:
            used_tokens = float(prompt_used + completion_used)
            adjustments: list[Adjustment] = []
            spent: list[tuple[str, float, float]] = []
            for c, epoch in zip(checks, epochs, strict=True):
                check = c.check
                if check.kind == "lease":
                    adjustments.append(Adjustment("lease", check.key))
                elif c.name == "tokens":
                    adjustments.append(
                        Adjustment("window", check.key, used_tokens - tokens, bucket)
                    )
                elif check.kind == "total":
                    actual = cost if c.name.startswith("usd") else used_tokens
                    adjustments.append(
                        Adjustment(
                            "total", check.key, actual - check.amount, actual=actual, epoch=epoch
                        )
                    )
                    spent.append((check.key, actual, now + check.ttl_s))
            if spent:
                self.spend.settled(ex.request_id, ex.ts, spent)
            if adjustments:
                self._settle(adjustments, ex.request_id)

        ex.settle = settle

    async def admit_request(self, p: Principal, request_id: str) -> dict[str, str]:
        """Count a request that generates nothing (Anthropic's count_tokens)
        against the requests-per-minute limits only: it spends no tokens, budget
        or slot. Returns the rate headers, or raises the 429 (or 503)."""
        if p.tenant_id is None:
            return {}
        now = self._clock()
        checks = [
            c
            for c in self.checks_for(self.subjects(p), p.tenant_id, tokens=0, usd=0.0, now=now)
            if c.name == "requests"
        ]
        if not checks:
            return {}
        _, headers = await self._reserve(p, checks, now, request_id)
        return headers

    async def _reserve(
        self, p: Principal, checks: list[Labelled], now: float, token: str
    ) -> tuple[Outcome, dict[str, str]]:
        """One atomic reservation of `checks`: the outcome and rate headers, or
        the refusal that explains which limit said no."""
        try:
            outcome = await self.store.reserve([c.check for c in checks], now=now, token=token)
        except StateUnavailable as exc:
            self._metrics.limit_rejections.labels(_tenant(p), f"{exc.what}_unavailable").inc()
            raise ForebayError(
                503,
                f"Forebay cannot check this key's {exc.what} right now (its shared counter store "
                "is unreachable); retry shortly, and tell your Forebay admin if it persists.",
                type="service_unavailable",
                code="limits_unavailable",
                headers={"retry-after": "2"},
            ) from None
        headers = _rate_headers(checks, outcome)
        if outcome.denied is not None:
            refused = checks[outcome.denied]
            self._metrics.limit_rejections.labels(_tenant(p), refused.name).inc()
            raise _refusal(
                refused, outcome.used[outcome.denied], outcome.wait_s[outcome.denied], headers, now
            )
        return outcome, headers

    def _settle(self, adjustments: list[Adjustment], token: str) -> None:
        if isinstance(self.store, InProcessCounters):
            self.store.settle_now(adjustments, token=token)
            return
        task = asyncio.get_running_loop().create_task(self.store.settle(adjustments, token=token))
        self._pending.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("settling a reservation failed: %r", task.exception())

    async def drain(self) -> None:
        """Wait for settlements still in flight (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _soft_warnings(
        self, checks: list[Labelled], outcome: Outcome, now: float
    ) -> dict[str, str]:
        warnings = []
        for c, used in zip(checks, outcome.used, strict=True):
            if c.soft is None or used < c.soft:
                continue
            unit = "$" if c.name.startswith("usd") else ""
            warnings.append(f"{c.subject.scope} {c.name} {unit}{used:.6g} of soft {unit}{c.soft:g}")
            self._metrics.budget_soft_exceeded.labels(c.subject.scope, c.name).inc()
            period_id = c.check.key.rsplit(":", 1)[-1]
            once = f"{c.check.key}:{period_id}"
            if once not in self._warned:
                self._warned.add(once)
                log.warning(
                    "%s %s passed its soft %s budget: %.6g of %g",
                    c.subject.scope,
                    c.subject.id,
                    c.name,
                    used,
                    c.soft,
                )
        return {"x-forebay-budget-warning": "; ".join(warnings)} if warnings else {}


def _upper_bounds(
    req: ParsedRequest, model: ModelAlias, output: int, hedged: bool
) -> tuple[float, float]:
    """(tokens, $) no deployment of the alias can exceed for this request. A plain
    text prompt has one bound for every deployment: the walk is done once either way."""
    shape = prompt_shape(prompt_body(req))  # a continued conversation: all of it
    tokens, usd = 0, 0.0
    for d in model.deployments:
        prompt = shape.bound(d.bounds)
        tokens = max(tokens, prompt)
        # Each prompt token at the dearest of its prices (written to the cache, say).
        prompt_usd = prompt * input_price_bound(d) * (2 if hedged else 1)
        usd = max(usd, prompt_usd + output * d.usd_per_output_token)
    return float(tokens + output), usd


def _cap_output(req: ParsedRequest, cap: int) -> None:
    """Set the output cap the caller left out (or set negative: no limit to llama.cpp)."""
    payload = req.payload
    if req.protocol is WireProtocol.OPENAI_RESPONSES:
        # Its own field (at least 16), and in the decoded body that translation encodes.
        cap = max(cap, 16)
        payload["max_output_tokens"] = cap
        if req.canonical is not None:
            req.canonical.max_output_tokens = cap
        return
    capped = False
    for name in ("max_completion_tokens", "max_tokens"):
        if payload.get(name) is not None:
            payload[name] = cap  # negative: max_output_tokens found no bound
            capped = True
    if not capped:
        payload["max_tokens"] = cap


def _choices(req: ParsedRequest) -> int:
    """How many completions the upstream generates (and bills): `n`, or `best_of`
    (completions) when larger; validated as integers."""
    n, best_of = req.payload.get("n"), req.payload.get("best_of")
    count = n if isinstance(n, int) else 1
    if isinstance(best_of, int) and best_of > count:
        count = best_of
    return max(count, 1)


def _tenant(p: Principal) -> str:
    return p.tenant_name or p.tenant_id or ""


def _duration(seconds: float) -> str:
    """OpenAI's reset format: 1s, 6m0s, 1h2m3s (sub-second as ms)."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    s = math.ceil(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    return f"{m}m{sec}s" if m else f"{sec}s"


def _rate_headers(checks: list[Labelled], outcome: Outcome) -> dict[str, str]:
    """x-ratelimit-* for requests and tokens, from whichever subject is tightest."""
    headers: dict[str, str] = {}
    for name in ("requests", "tokens"):
        best: tuple[float, float, float] | None = None  # remaining, limit, wait
        for c, used, wait in zip(checks, outcome.used, outcome.wait_s, strict=True):
            if c.name != name or c.check.limit is None:
                continue
            remaining = max(0.0, c.check.limit - used)
            if best is None or remaining < best[0]:
                best = (remaining, c.check.limit, wait)
        if best is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(int(best[1]))
            headers[f"x-ratelimit-remaining-{name}"] = str(int(best[0]))
            headers[f"x-ratelimit-reset-{name}"] = _duration(best[2])
    return headers


def _refusal(
    c: Labelled, used: float, wait: float, headers: dict[str, str], now: float
) -> ForebayError:
    who = f"{c.subject.scope} '{c.subject.label}'"
    retry = str(max(1, math.ceil(wait)))
    headers = {**headers, "retry-after": retry}
    limit = c.check.limit or 0
    if c.name in ("requests", "tokens"):
        what = "requests per minute (RPM)" if c.name == "requests" else "tokens per minute (TPM)"
        asked = "" if c.name == "requests" else f", requested {int(c.check.amount)}"
        return ForebayError(
            429,
            f"Rate limit reached for {who} on {what}: limit {int(limit)}, used {int(used)}{asked}. "
            f"Please try again in {_duration(wait)}.",
            type=c.name,
            code="rate_limit_exceeded",
            headers=headers,
        )
    if c.name == "concurrent":
        return ForebayError(
            429,
            f"{who.capitalize()} already has {int(used)} requests in flight, its limit; "
            "retry when one finishes.",
            type="requests",
            code="concurrency_limit_exceeded",
            headers=headers,
        )
    unit, _, period = c.name.partition("_per_")
    _, _, end = period_bounds(period, now)  # type: ignore[arg-type]
    resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end))
    amount = f"${limit:,.2f}" if unit == "usd" else f"{int(limit):,} tokens"
    spent = f"${used:,.4f}" if unit == "usd" else f"{int(used):,} tokens"
    return ForebayError(
        429,
        f"{who.capitalize()} has reached its {'daily' if period == 'day' else 'monthly'} budget of "
        f"{amount} ({spent} spent or reserved; this request needs up to "
        f"{'$' if unit == 'usd' else ''}{c.check.amount:.6g} more). It resets at {resets}; "
        "ask your Forebay admin to raise it.",
        type="insufficient_quota",
        code="budget_exceeded",
        headers=headers,
    )
