"""Builds the ASGI app and owns everything it runs: the ledger writer, the
upstream pools, the embedded model workers and the key-refresh loop. No module
globals: tests build as many independent apps as they like."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from forebay.api.admin import admin_routes
from forebay.api.admin_limits import limit_routes
from forebay.api.errors import error_response
from forebay.api.openai import openai_routes
from forebay.api.ops import ops_routes
from forebay.config.settings import Settings
from forebay.db.engine import database_url, make_engine
from forebay.db.migrate import upgrade
from forebay.errors import ForebayError, internal_error
from forebay.gateway.auth import KeyRing
from forebay.gateway.limits import Limiter, budget_key, period_bounds
from forebay.gateway.load_signals import poll_load
from forebay.gateway.pipeline import Gateway
from forebay.gateway.recorder import Recorder, new_request_id
from forebay.gateway.redact import Redactor
from forebay.gateway.traffic import Traffic, build_traffic
from forebay.ledger.writer import LedgerWriter
from forebay.state.counters import CounterStore, InProcessCounters
from forebay.state.failover import RedisWithFallback
from forebay.state.policy import PolicyBook
from forebay.state.policy_store import PolicyStore
from forebay.state.redis_counters import RedisCounters
from forebay.telemetry.metrics import Metrics
from forebay.tenancy.bootstrap import Bootstrapped, bootstrap
from forebay.tenancy.store import TenancyStore
from forebay.upstreams.registry import UpstreamSet, build_upstreams

if TYPE_CHECKING:
    from forebay.upstreams.local.supervisor import WorkerSupervisor

log = logging.getLogger("forebay")


@dataclass
class Services:
    """Everything one gateway process owns, created once and passed explicitly."""

    settings: Settings
    engine: Engine
    store: TenancyStore
    keyring: KeyRing
    metrics: Metrics
    ledger: LedgerWriter
    upstreams: UpstreamSet
    gateway: Gateway
    bootstrapped: Bootstrapped
    limiter: Limiter
    policies: PolicyStore
    traffic: Traffic
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _seeded: set[str] = field(default_factory=set)
    _recoveries_seen: int = 0

    async def refresh_keys(self) -> None:
        """Keys and limit policies, re-read together (neither is read per request)."""
        self.keyring.replace(await asyncio.to_thread(self.store.active_principals))
        self.limiter.book.replace(await asyncio.to_thread(self.policies.all))
        await self._seed_budgets()

    async def _seed_budgets(self) -> None:
        """Start each budget period's counter from the spend already in the ledger,
        so a restart (or a fresh Redis) does not hand out a budget twice."""
        recoveries = getattr(self.limiter.store, "recoveries", 0)
        if recoveries != self._recoveries_seen:
            self._recoveries_seen = recoveries
            self._seeded.clear()
        now = time.time()
        for p in self.keyring.principals():
            if p.tenant_id is None:
                continue
            for subject, policy in self.limiter.subjects(p):
                for unit, period, _ in policy.budgets():
                    key = budget_key(subject, p.tenant_id, unit, period, now)
                    if key in self._seeded:
                        continue
                    _, start, end = period_bounds(period, now)
                    usd, tokens = await asyncio.to_thread(
                        self.policies.spent, subject.scope, subject.id, start
                    )
                    value = usd if unit == "usd" else float(tokens)
                    await self.limiter.store.seed(key, value, now=now, ttl_s=end - now)
                    self._seeded.add(key)

    async def start(self) -> None:
        for name, worker in self.upstreams.workers.items():
            # Read at scrape time, so a restart shows at once.
            self.metrics.worker_restarts.labels(name).set_function(_restarts_of(worker))
        self.ledger.start()
        await self.refresh_keys()
        await self.upstreams.start()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="key-refresh"))
        self._tasks.append(asyncio.create_task(self._gauge_loop(), name="upstream-gauges"))
        polled = [
            state
            for alias, pool in self.traffic.pools.items()
            if self.traffic.uses_load_signals(alias)
            for state in pool.states
        ]
        if polled:
            self._tasks.append(asyncio.create_task(poll_load(polled), name="load-signals"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.upstreams.close()
        await self.limiter.drain()
        await self.limiter.store.close()
        await asyncio.to_thread(self.ledger.close)
        self.engine.dispose()

    async def _refresh_loop(self) -> None:
        # Picks up keys created or revoked by the CLI or by other replicas.
        while True:
            await asyncio.sleep(self.settings.key_refresh_s)
            try:
                await self.refresh_keys()
            except Exception:
                log.exception("key refresh failed; keeping the previous keys")

    async def _gauge_loop(self) -> None:
        while True:
            for up in self.upstreams.all:
                self.metrics.upstream_ready.labels(up.deployment.name).set(1 if up.ready() else 0)
            for alias, pool in self.traffic.pools.items():
                self.metrics.in_flight.labels(alias).set(pool.active)
                for state in pool.states:
                    self.metrics.deployment_limit.labels(state.name).set(state.limit)
                for cls in self.traffic.classes:
                    self.metrics.queue_depth.labels(alias, cls).set(0)
                for cls, n in pool.waiting_by_class().items():
                    self.metrics.queue_depth.labels(alias, cls).set(n)
            await asyncio.sleep(1.0)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        deployments = {up.deployment.name: up.ready() for up in self.upstreams.all}
        workers = {name: w.state for name, w in self.upstreams.workers.items()}
        # Local workers are part of this process's job; remote upstreams being
        # down must not take every replica out of the load balancer.
        ready = all(w.ready for w in self.upstreams.workers.values()) and len(self.keyring) > 0
        return ready, {"deployments": deployments, "workers": workers}


def _restarts_of(worker: WorkerSupervisor) -> Callable[[], float]:
    return lambda: float(worker.restarts)


def prepare(settings: Settings, *, env_admin_key: str | None = None) -> Bootstrapped:
    """Migrate the database and create the first keys, once, before worker
    processes start (so keys are printed once, not once per worker)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(settings.database_url, settings.data_dir))
    try:
        upgrade(engine)
        return bootstrap(TenancyStore(engine), env_admin_key=env_admin_key)
    finally:
        engine.dispose()


def app_from_env() -> Starlette:
    """The app of one `forebay serve --workers N` worker process."""
    from forebay.config.load import load_settings

    config = os.environ.get("FOREBAY_CONFIG")
    data_dir = os.environ.get("FOREBAY_DATA_DIR")  # set by the parent to what it resolved
    settings = load_settings(
        Path(config) if config else None, data_dir=Path(data_dir) if data_dir else None
    )
    return create_app(build_services(settings, env_admin_key=env_admin_key()))


def build_services(settings: Settings, *, env_admin_key: str | None = None) -> Services:
    """Open the database (migrating it), bootstrap tenancy, wire the pipeline.
    Synchronous and done before serving, so start-up errors are plain."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(settings.database_url, settings.data_dir))
    upgrade(engine)
    store = TenancyStore(engine)
    boot = bootstrap(store, env_admin_key=env_admin_key)
    metrics = Metrics()
    ledger = LedgerWriter(
        engine,
        queue_size=settings.ledger.queue_size,
        batch_size=settings.ledger.batch_size,
        flush_interval_s=settings.ledger.flush_interval_s,
        on_dropped=metrics.ledger_dropped.inc,
        on_written=metrics.ledger_written.inc,
    )
    metrics.bind_ledger(lambda: ledger.depth)
    keyring = KeyRing(env_admin_key)
    upstreams = build_upstreams(settings, log_dir=settings.data_dir / "logs")
    recorder = Recorder(ledger, metrics, settings.revision)
    limiter = Limiter(PolicyBook(), _counter_store(settings, metrics), settings.limits, metrics)
    traffic = build_traffic(
        settings,
        upstreams.by_alias,
        on_shed=lambda alias, cls: metrics.shed.labels(alias, cls).inc(),
        on_eject=lambda name: metrics.ejections.labels(name).inc(),
    )
    gateway = Gateway(
        models=settings.models,
        keyring=keyring,
        traffic=traffic,
        resilience=settings.resilience,
        recorder=recorder,
        max_body_bytes=settings.max_body_bytes,
        limiter=limiter,
        redactor=Redactor.for_deployments(
            d for m in settings.models.values() for d in m.deployments
        ),
    )
    return Services(
        settings,
        engine,
        store,
        keyring,
        metrics,
        ledger,
        upstreams,
        gateway,
        boot,
        limiter,
        PolicyStore(engine),
        traffic,
    )


def _counter_store(settings: Settings, metrics: Metrics) -> CounterStore:
    if not settings.redis.url:
        return InProcessCounters()
    down = settings.limits.on_redis_down
    return RedisWithFallback(
        RedisCounters.from_url(settings.redis.url, timeout_s=settings.redis.timeout_s),
        rate_limits=down.rate_limits,
        budgets=down.budgets,
        retry_s=settings.limits.redis_retry_s,
        on_degraded=lambda degraded: metrics.limits_degraded.set(1 if degraded else 0),
    )


def create_app(services: Services) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    routes = [
        *openai_routes(services.gateway, services.keyring, services.settings.models),
        *admin_routes(
            services.store,
            services.keyring,
            services.engine,
            services.refresh_keys,
            class_names=list(services.settings.classes),
        ),
        *limit_routes(services.policies, services.limiter, services.keyring, services.refresh_keys),
        *ops_routes(services.metrics, services.readiness),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ForebayError)
        return error_response(exc)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(
            ForebayError(
                404,
                f"No route {request.method} {request.url.path}; the API lives under /v1.",
                code="unknown_url",
            )
        )

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(
            ForebayError(
                405,
                f"{request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed",
            )
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Any route: the envelope and a request id, never the traceback (that is logged).
        request_id = new_request_id()
        log.error("%s %s failed (request id %s)", request.method, request.url.path, request_id)
        return error_response(internal_error(request_id))

    app.add_exception_handler(ForebayError, api_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, method_not_allowed)
    return app


def env_admin_key() -> str | None:
    return os.environ.get("FOREBAY_ADMIN_KEY") or None
