"""Probes and metrics for operators and orchestrators.

/healthz is public (liveness). /readyz answers its status code to anyone (load
balancers need it) but names aliases and deployments only to an operator.
/metrics, labelled by tenant, is for operators only: a bearer token that is
`server.metrics_token` or an admin key.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from forebay.api.errors import error_response
from forebay.errors import ForebayError, unauthorized
from forebay.gateway.auth import KeyRing, bearer_key
from forebay.telemetry.metrics import Metrics

OperatorCheck = Callable[[Request], None]


def operator_check(keyring: KeyRing, metrics_token: str) -> OperatorCheck:
    """Raise unless the request carries the metrics token or an admin key."""
    token = metrics_token.encode()

    def check(request: Request) -> None:
        key = bearer_key(request.headers.get("authorization"), request.headers.get("api-key"))
        if key is None:
            raise unauthorized(
                "This endpoint is for operators: send 'Authorization: Bearer <token>' with "
                "server.metrics_token or an admin key."
            )
        if token and hmac.compare_digest(key.encode(), token):
            return
        principal = keyring.lookup(key)
        if principal is None:
            raise unauthorized("Invalid token: use server.metrics_token or an admin key.")
        if not principal.is_admin:
            raise ForebayError(
                403,
                "Tenant keys cannot read operator endpoints; use server.metrics_token "
                "or an admin key.",
                type="permission_error",
                code="operator_required",
            )

    return check


def ops_routes(
    metrics: Metrics,
    readiness: Callable[[], tuple[bool, dict[str, object]]],
    operator: OperatorCheck,
) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        ready, detail = readiness()
        try:
            operator(request)
            shown = detail
        except ForebayError:
            shown = {"status": detail["status"]}
        return Response(orjson.dumps(shown), 200 if ready else 503, media_type="application/json")

    async def prometheus(request: Request) -> Response:
        try:
            operator(request)
        except ForebayError as err:
            return error_response(err)
        return metrics_response(metrics)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]


def metrics_response(metrics: Metrics) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def with_metrics_listener(app: ASGIApp, metrics: Metrics, port: int) -> ASGIApp:
    """`app`, except that requests arriving on the local `port` (the
    server.metrics_listen socket) get /metrics without a token and nothing else."""

    async def scrape(request: Request) -> Response:
        return metrics_response(metrics)

    only_metrics = Router(
        routes=[Route("/metrics", scrape, methods=["GET"])], redirect_slashes=False
    )

    async def by_listener(scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] == "http" and server is not None and server[1] == port:
            await only_metrics(scope, receive, send)
        else:
            await app(scope, receive, send)

    return by_listener
