"""Admin API for limits and budgets: set, read (with live usage), clear."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forebay.api.admin import admin_guard, body_of, json_response
from forebay.errors import ForebayError, bad_request, not_found
from forebay.gateway.auth import KeyRing
from forebay.gateway.counter_keys import period_bounds
from forebay.gateway.limits import Limiter
from forebay.state.policy import LimitPolicy, Scope, Subject
from forebay.state.policy_store import PolicyStore


def limit_routes(
    policies: PolicyStore,
    limiter: Limiter,
    keyring: KeyRing,
    refresh: Callable[[], Awaitable[None]],
) -> list[Route]:
    guarded = admin_guard(keyring)

    def scope_of(request: Request) -> Scope:
        scope = request.path_params["scope"]
        if scope not in ("tenant", "key"):
            raise bad_request(
                "The path must be /admin/limits/tenant/<id or name> or /key/<key id>."
            )
        return scope  # type: ignore[no-any-return]

    async def put(request: Request) -> Response:
        scope = scope_of(request)
        body = await body_of(request)
        try:
            policy = LimitPolicy.model_validate(body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        subject_id, _ = await asyncio.to_thread(policies.resolve, scope, request.path_params["ref"])
        await asyncio.to_thread(policies.set, scope, subject_id, policy)
        await refresh()
        return _policy_response(scope, subject_id, policy)

    async def patch(request: Request) -> Response:
        """A JSON merge patch (RFC 7396): only the limits named change; null removes one."""
        scope = scope_of(request)
        body = await body_of(request)
        subject_id, _ = await asyncio.to_thread(policies.resolve, scope, request.path_params["ref"])
        try:
            policy = await asyncio.to_thread(policies.update, scope, subject_id, body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        await refresh()
        return _policy_response(scope, subject_id, policy)

    async def get(request: Request) -> Response:
        scope = scope_of(request)
        subject_id, tenant_id = await asyncio.to_thread(
            policies.resolve, scope, request.path_params["ref"]
        )
        policy = limiter.book.get(scope, subject_id)
        if policy is None:
            raise not_found(f"No limits are set for {scope} '{subject_id}'.", code="no_limits")
        usage = await _live_usage(
            limiter, Subject(scope, subject_id, subject_id), policy, tenant_id
        )
        return json_response(
            {
                "scope": scope,
                "subject_id": subject_id,
                "policy": policy.model_dump(exclude_none=True),
                "usage": usage,
            }
        )

    async def clear(request: Request) -> Response:
        scope = scope_of(request)
        subject_id, _ = await asyncio.to_thread(policies.resolve, scope, request.path_params["ref"])
        if not await asyncio.to_thread(policies.clear, scope, subject_id):
            raise not_found(f"No limits are set for {scope} '{subject_id}'.", code="no_limits")
        await refresh()
        return json_response({"scope": scope, "subject_id": subject_id, "cleared": True})

    async def list_all(request: Request) -> Response:
        rows = await asyncio.to_thread(policies.all)
        data = [
            {"scope": scope, "subject_id": sid, "policy": p.model_dump(exclude_none=True)}
            for (scope, sid), p in rows.items()
        ]
        return json_response({"object": "list", "data": data})

    return [
        Route("/admin/limits", guarded(list_all), methods=["GET"]),
        Route("/admin/limits/{scope}/{ref}", guarded(put), methods=["PUT"]),
        Route("/admin/limits/{scope}/{ref}", guarded(patch), methods=["PATCH"]),
        Route("/admin/limits/{scope}/{ref}", guarded(get), methods=["GET"]),
        Route("/admin/limits/{scope}/{ref}", guarded(clear), methods=["DELETE"]),
    ]


def _invalid(exc: ValidationError) -> ForebayError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return bad_request(f"'{where}': {first['msg']}", param=where or None)


def _policy_response(scope: Scope, subject_id: str, policy: LimitPolicy) -> Response:
    return json_response(
        {"scope": scope, "subject_id": subject_id, "policy": policy.model_dump(exclude_none=True)}
    )


async def _live_usage(
    limiter: Limiter, subject: Subject, policy: LimitPolicy, tenant_id: str
) -> dict[str, Any]:
    """Peek at the counters: the same checks a request makes, with nothing added."""
    now = time.time()
    labelled = limiter.checks_for([(subject, policy)], tenant_id, tokens=0, usd=0, now=now)
    peek = [replace(c.check, limit=None, amount=0) for c in labelled]
    outcome = await limiter.store.reserve(peek, now=now, token="admin-peek")  # noqa: S106
    usage: dict[str, Any] = {}
    for c, used in zip(labelled, outcome.used, strict=True):
        entry: dict[str, Any] = {"used": used, "limit": c.check.limit}
        if c.check.kind == "total":
            _, _, end = period_bounds(c.name.partition("_per_")[2], now)  # type: ignore[arg-type]
            entry.update(soft=c.soft, resets_at=end)
        usage[c.name] = entry
    return usage
