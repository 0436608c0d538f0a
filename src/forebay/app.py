"""Builds the ASGI app and owns everything it runs: the ledger writer, the
upstream pools, the embedded model workers, the key-refresh and spend loops. No module
globals: tests build as many independent apps as they like."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from forebay.api.admin import admin_routes
from forebay.api.admin_limits import limit_routes
from forebay.api.anthropic import anthropic_routes
from forebay.api.connections import GUARD_HOOK, EdgeGuard, GuardHook
from forebay.api.errors import anthropic_error_response, error_response
from forebay.api.openai import openai_routes
from forebay.api.ops import operator_check, ops_routes, with_metrics_listener
from forebay.api.responses import create_route, responses_routes
from forebay.api.responses_background import BackgroundRuns
from forebay.config.settings import Settings
from forebay.db import changes
from forebay.db.engine import database_url, make_engine
from forebay.db.migrate import upgrade
from forebay.errors import ForebayError, internal_error
from forebay.gateway.auth import KeyRing
from forebay.gateway.auth_failures import FailedAuth
from forebay.gateway.limits import Limiter
from forebay.gateway.load_signals import poll_load
from forebay.gateway.pipeline import Gateway
from forebay.gateway.probes import probe_health
from forebay.gateway.recorder import Recorder, new_request_id
from forebay.gateway.redact import Redactor
from forebay.gateway.traffic import Traffic, build_traffic
from forebay.ledger.replay import INTERRUPTED_STATUS, replay_spools
from forebay.ledger.responses_journal import Journal
from forebay.ledger.responses_journal import recover as recover_background
from forebay.ledger.responses_store import ResponsesStore
from forebay.ledger.spool import Spool
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

DEAD_LETTER_FILE = "ledger-dead-letter.jsonl"


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
    responses: ResponsesStore
    background: BackgroundRuns | None = None  # Responses background: true (set by build_services)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _seen_change: int = -1
    full_refreshes: int = 0  # keys and policies re-read (a test checks it stays still when idle)

    async def refresh_keys(self) -> None:
        """Keys and limit policies, re-read together (neither is read per request), then
        the spend budget counters start from. One refresh at a time, so a slow one never
        puts back what a newer one read; the change counter is read first, so a change
        made meanwhile is seen by the next poll rather than missed."""
        async with self._refreshing:
            change = await asyncio.to_thread(changes.current, self.engine)
            self.keyring.replace(await asyncio.to_thread(self.store.active_principals))
            self.limiter.book.replace(await asyncio.to_thread(self.policies.all))
            self._seen_change = change
            self.full_refreshes += 1
        try:  # a new budget starts from what its subject has spent; the spend loop retries
            await self.limiter.spend.refresh(self.policies, self.limiter.book)
        except Exception:
            log.exception("reading spend from the ledger failed; using the last read")

    async def start(self) -> None:
        for name, worker in self.upstreams.workers.items():
            # Read at scrape time, so a restart shows at once.
            self.metrics.worker_restarts.labels(name).set_function(_restarts_of(worker))
        self.ledger.start()
        self.responses.start()
        if self.background is not None and self.background.journal is not None:
            journal = self.background.journal
            # Before this process's own journal exists: the dead ones' only.
            found = await asyncio.to_thread(
                recover_background, journal.directory, self.responses.table.interrupt
            )
            if found:
                log.warning("%d background responses were interrupted by a stop", found)
            journal.open()
        await self.refresh_keys()
        await self.upstreams.start()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="key-refresh"))
        self._tasks.append(asyncio.create_task(self._spend_loop(), name="spend-refresh"))
        self._tasks.append(asyncio.create_task(self._gauge_loop(), name="upstream-gauges"))
        self._tasks.append(asyncio.create_task(self._auth_failure_log(), name="auth-failures"))
        polled = [
            state
            for alias, pool in self.traffic.pools.items()
            if self.traffic.uses_load_signals(alias)
            for state in pool.states
        ]
        if polled:
            self._tasks.append(asyncio.create_task(poll_load(polled), name="load-signals"))
        remote = [
            state
            for pool in self.traffic.pools.values()
            for state in pool.states
            if state.upstream.deployment.provider != "local"
        ]
        if remote and self.settings.probes.enabled:
            self._tasks.append(
                asyncio.create_task(probe_health(remote, self.settings.probes), name="probes")
            )

    async def stop(self) -> None:
        if self.background is not None:  # first: their slots, reservations and rows
            await self.background.stop(self.settings.responses.background_grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.upstreams.close()
        await self.limiter.drain()
        await self.limiter.store.close()
        await self.responses.stop()
        await asyncio.to_thread(self.ledger.close)
        self.engine.dispose()

    async def _refresh_loop(self) -> None:
        # Picks up keys and limits changed by the CLI or by other replicas: one
        # single-row read per poll, a full reload only when the counter moved.
        async def poll() -> None:
            if await asyncio.to_thread(changes.current, self.engine) != self._seen_change:
                await self.refresh_keys()

        await _every(self.settings.key_refresh_s, poll, "key refresh failed; keeping the keys")

    async def _spend_loop(self) -> None:
        # What budget counters start from if they go missing (see gateway/spend.py).
        async def read() -> None:
            await self.limiter.spend.refresh(self.policies, self.limiter.book)

        await _every(
            self.settings.limits.spend_refresh_s, read, "reading spend from the ledger failed"
        )

    async def _auth_failure_log(self) -> None:
        """One line per interval for failed authentication, never one per request."""
        interval = self.settings.auth.failure_log_interval_s
        while True:
            await asyncio.sleep(interval)
            s = self.keyring.failures.take_summary()
            if not s.failures and not s.throttled:
                continue
            cap = self.settings.auth.throttle.max_sources
            log.warning(
                "failed authentication in the last %g s: %d requests (missing key %d, "
                "malformed %d, invalid or revoked %d) from %s%d source address(es); "
                "%d more refused by the throttle (429)",
                interval,
                s.failures,
                s.by_reason["missing"],
                s.by_reason["malformed"],
                s.by_reason["invalid"],
                "at least " if len(s.sources) >= cap else "",
                len(s.sources),
                s.throttled,
            )

    async def _gauge_loop(self) -> None:
        while True:
            now = time.monotonic()
            for alias, pool in self.traffic.pools.items():
                for state in pool.states:
                    ready = state.condition(now)[0] == "ready"
                    self.metrics.upstream_ready.labels(state.name).set(1 if ready else 0)
                self.metrics.in_flight.labels(alias).set(pool.active)
                for state in pool.states:
                    self.metrics.deployment_limit.labels(state.name).set(state.limit)
                for cls in self.traffic.classes:
                    self.metrics.queue_depth.labels(alias, cls).set(0)
                for cls, n in pool.waiting_by_class().items():
                    self.metrics.queue_depth.labels(alias, cls).set(n)
            await asyncio.sleep(1.0)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """(ready, detail). Ready: this process can serve (keys loaded, local
        workers up). A remote deployment that is down makes the answer
        `degraded`, still ready: every replica shares that upstream, so taking
        replicas out of the load balancer would only stop the other models."""
        now = time.monotonic()
        aliases: dict[str, object] = {}
        degraded = []
        for alias, pool in self.traffic.pools.items():
            deployments = {}
            for state in pool.states:
                condition, why = state.condition(now)
                deployments[state.name] = {
                    "state": condition,
                    "detail": why,
                    "in_flight": state.inflight,
                }
            can_serve = any(d["state"] == "ready" for d in deployments.values())
            if not can_serve:
                degraded.append(alias)
            aliases[alias] = {"can_serve": can_serve, "deployments": deployments}
        workers = {name: w.state for name, w in self.upstreams.workers.items()}
        ready = all(w.ready for w in self.upstreams.workers.values()) and len(self.keyring) > 0
        status = "degraded" if degraded else "ready"
        return ready, {
            "status": status if ready else "not_ready",
            "cannot_serve": degraded,
            "aliases": aliases,
            "workers": workers,
        }


async def _every(interval_s: float, work: Callable[[], Awaitable[None]], failed: str) -> None:
    """Run `work` every `interval_s` forever; a failure is logged once per streak (a
    database that is down would otherwise fill the log four times a second)."""
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        running = asyncio.ensure_future(work())
        try:
            await asyncio.shield(running)
            failing = False
        except asyncio.CancelledError:
            # Stopping: let a database read in its thread finish, so its connection is back
            # in the pool before the engine is disposed (else it leaks, unclosed).
            with contextlib.suppress(Exception):
                await running
            raise
        except Exception:
            if not failing:
                log.exception("%s; will retry every %.2g s", failed, interval_s)
            failing = True


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


def app_from_env() -> ASGIApp:
    """The app of one `forebay serve --workers N` worker process."""
    from forebay.config.load import load_settings

    config = os.environ.get("FOREBAY_CONFIG")
    data_dir = os.environ.get("FOREBAY_DATA_DIR")  # set by the parent to what it resolved
    settings = load_settings(
        Path(config) if config else None, data_dir=Path(data_dir) if data_dir else None
    )
    services = build_services(settings, env_admin_key=env_admin_key())
    metrics_port = os.environ.get("FOREBAY_METRICS_PORT")  # the parent bound the listener
    return served_app(services, int(metrics_port) if metrics_port else None)


def served_app(services: Services, metrics_port: int | None) -> ASGIApp:
    """The app as the server runs it: requests that arrive on the metrics
    listener's port (server.metrics_listen) see /metrics alone, without a token."""
    app = create_app(services)
    if metrics_port is None:
        return app
    return with_metrics_listener(app, services.metrics, metrics_port)


def build_services(settings: Settings, *, env_admin_key: str | None = None) -> Services:
    """Open the database (migrating it), bootstrap tenancy, wire the pipeline.
    Synchronous and done before serving, so start-up errors are plain."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(settings.database_url, settings.data_dir))
    upgrade(engine)
    store = TenancyStore(engine)
    boot = bootstrap(store, env_admin_key=env_admin_key)
    metrics = Metrics()
    ledger = _ledger_writer(settings, engine, metrics)
    keyring = KeyRing(env_admin_key, FailedAuth(settings.auth.throttle, metrics))
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
    responses = _responses_store(settings, engine)
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
        responses,
        BackgroundRuns(responses, Journal(settings.data_dir / "background")),
    )


def _responses_store(settings: Settings, engine: Engine) -> ResponsesStore:
    cfg = settings.responses
    return ResponsesStore(
        engine,
        retention_s=cfg.retention_days * 86400,
        max_chain=cfg.max_chain,
        max_pending=cfg.max_pending,
        purge_interval_s=cfg.purge_interval_s,
    )


def _ledger_writer(settings: Settings, engine: Engine, metrics: Metrics) -> LedgerWriter:
    """The writer, after the spools of processes that died are in the ledger
    (before serving: their usage counts toward budgets seeded at start)."""
    cfg = settings.ledger
    spool_dir = settings.data_dir / "spool"
    ledger = LedgerWriter(
        engine,
        queue_size=cfg.queue_size,
        batch_size=cfg.batch_size,
        flush_interval_s=cfg.flush_interval_s,
        on_dropped=metrics.ledger_dropped.inc,
        on_written=metrics.ledger_written.inc,
        on_rejected=metrics.ledger_rejected.inc,
        dead_letter=settings.data_dir / DEAD_LETTER_FILE,
    )
    found = replay_spools(spool_dir, ledger.committer, batch_size=cfg.batch_size)
    metrics.ledger_replayed.inc(found.replayed)
    metrics.ledger_interrupted.inc(found.interrupted)
    if found.owners:
        log.warning(
            "ledger: took over the spools of %d stopped process(es): %d served requests "
            "written (%d were already recorded), %d requests in flight recorded as "
            "interrupted (status %d), %d refused, %d unreadable lines, %d files kept",
            found.owners,
            found.replayed,
            found.already,
            found.interrupted,
            INTERRUPTED_STATUS,
            found.rejected,
            found.unreadable,
            found.kept,
        )
    if cfg.spool:
        ledger.spool = Spool(
            spool_dir,
            segment_bytes=cfg.spool_segment_bytes,
            on_error=metrics.ledger_spool_errors.inc,
        ).open()
    metrics.bind_ledger(lambda: ledger.depth)
    return ledger


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
    def bind_guard(guard: EdgeGuard) -> None:
        services.metrics.bind_connections(lambda: guard.open, lambda: guard.refused)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, GuardHook]]:
        await services.start()
        # Everything built so far (modules, config, tables, the key ring) lives as
        # long as the process: out of the collector's sight, a full collection
        # scans only what requests allocate. About 13 % less CPU a request at
        # c=64 (bench/overhead.py), where most objects alive are startup's.
        gc.collect()
        gc.freeze()
        try:
            # uvicorn hands this state to the connection protocol (api/connections.py).
            yield {GUARD_HOOK: bind_guard}
        finally:
            await services.stop()

    settings = services.settings
    routes = [
        *openai_routes(services.gateway, services.keyring, settings.models),
        *anthropic_routes(
            services.gateway,
            services.keyring,
            settings.models,
            settings.max_body_bytes,
            services.limiter,
        ),
        create_route(services.gateway, services.responses, services.background),
        *responses_routes(services.responses, services.keyring, services.background),
        *admin_routes(
            services.store,
            services.keyring,
            services.engine,
            services.refresh_keys,
            class_names=list(services.settings.classes),
            model_names=list(services.settings.models),
            default_class=services.settings.admission.default_class,
        ),
        *limit_routes(services.policies, services.limiter, services.keyring, services.refresh_keys),
        *ops_routes(
            services.metrics,
            services.readiness,
            operator_check(
                services.keyring, services.settings.server.metrics_token.get_secret_value()
            ),
        ),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # A redirect to the slash-less path would be built from the client's Host
    # header and answered before authentication; every unknown path is a 404.
    app.router.redirect_slashes = False

    def render(request: Request, err: ForebayError) -> Response:
        """Errors on Anthropic's routes in its envelope, the rest in OpenAI's."""
        if request.scope["path"].startswith("/v1/messages"):
            return anthropic_error_response(err)
        return error_response(err)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ForebayError)
        return render(request, exc)

    async def not_found(request: Request, exc: Exception) -> Response:
        return render(
            request,
            ForebayError(
                404,
                f"No route {request.method} {request.url.path}; the API lives under /v1.",
                code="unknown_url",
            ),
        )

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return render(
            request,
            ForebayError(
                405,
                f"{request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed",
            ),
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Any route: the envelope and a request id, never the traceback (that is logged).
        request_id = new_request_id()
        log.error("%s %s failed (request id %s)", request.method, request.url.path, request_id)
        return render(request, internal_error(request_id))

    app.add_exception_handler(ForebayError, api_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, method_not_allowed)
    return app


def env_admin_key() -> str | None:
    return os.environ.get("FOREBAY_ADMIN_KEY") or None
