"""Probes and metrics for operators and orchestrators."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forebay.telemetry.metrics import Metrics


def ops_routes(
    metrics: Metrics, readiness: Callable[[], tuple[bool, dict[str, object]]]
) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        ready, detail = readiness()
        body = orjson.dumps({"status": "ready" if ready else "not_ready", **detail})
        return Response(body, 200 if ready else 503, media_type="application/json")

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
