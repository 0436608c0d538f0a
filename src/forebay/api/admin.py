"""Admin API: tenants, keys and usage. Admin key required; every store call
runs in a thread so the event loop never waits on the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict
from typing import Any

import orjson
from sqlalchemy import Engine
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from forebay.api.errors import error_response
from forebay.errors import ForebayError, TenancyError, bad_request, not_found
from forebay.gateway.auth import KeyRing, authenticate, require_admin
from forebay.ledger.query import GROUPINGS, parse_since, summarize
from forebay.tenancy.scope import KeyScope, KeyScopeError, check_key_scope
from forebay.tenancy.store import TenancyStore

Handler = Callable[[Request], Awaitable[Response]]


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")


def admin_guard(keyring: KeyRing) -> Callable[[Handler], Handler]:
    """Wrap a handler: admin key required; tenancy errors become 400s."""

    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            try:
                principal = authenticate(keyring, request)
                require_admin(principal)
                return await handler(request)
            except ForebayError as err:
                return error_response(err)
            except TenancyError as err:
                return error_response(bad_request(str(err)))

        return wrapper

    return guarded


async def body_of(request: Request) -> dict[str, Any]:
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise ForebayError(
            499, "The client closed the connection mid-body.", code="client_disconnected"
        ) from None
    if len(raw) > 64 * 1024:
        raise ForebayError(413, "Admin request bodies are limited to 64 KiB.")
    try:
        obj = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise bad_request("The request body must be a JSON object.")
    return obj


def admin_routes(
    store: TenancyStore,
    keyring: KeyRing,
    engine: Engine,
    refresh_keys: Callable[[], Awaitable[None]],
    class_names: Collection[str] = (),
    *,
    model_names: Collection[str],
    default_class: str,
) -> list[Route]:
    guarded = admin_guard(keyring)

    def key_scope(body: dict[str, Any]) -> KeyScope:
        models, classes, default = (
            body.get("models"),
            body.get("classes"),
            body.get("default_class"),
        )
        for field, value in (("models", models), ("classes", classes)):
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                raise bad_request(f"'{field}' must be a list of names.", param=field)
        if default is not None and not isinstance(default, str):
            raise bad_request("'default_class' must be a class name.", param="default_class")
        try:
            return check_key_scope(
                models,
                classes,
                default,
                known_models=model_names,
                known_classes=class_names,
                gateway_default=default_class,
            )
        except KeyScopeError as exc:
            raise bad_request(str(exc), param=exc.param) from None

    async def create_tenant(request: Request) -> Response:
        body = await body_of(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise bad_request("'name' is required: the tenant's name.", param="name")
        tenant = await asyncio.to_thread(store.create_tenant, name)
        return json_response(asdict(tenant), 201)

    async def list_tenants(request: Request) -> Response:
        tenants = await asyncio.to_thread(store.list_tenants)
        return json_response({"object": "list", "data": [asdict(t) for t in tenants]})

    async def create_key(request: Request) -> Response:
        body = await body_of(request)
        tenant = body.get("tenant")
        if not isinstance(tenant, str):
            raise bad_request("'tenant' is required: a tenant id or name.", param="tenant")
        name = body.get("name", "")
        if not isinstance(name, str):
            raise bad_request("'name' must be a string.", param="name")
        scope = key_scope(body)
        issued = await asyncio.to_thread(
            store.create_key,
            tenant,
            models=scope.models,
            name=name,
            classes=scope.classes,
            default_class=scope.default_class,
        )
        await refresh_keys()
        return json_response({**asdict(issued.info), "key": issued.key}, 201)

    async def list_keys(request: Request) -> Response:
        keys = await asyncio.to_thread(store.list_keys, tenant=request.query_params.get("tenant"))
        return json_response({"object": "list", "data": [asdict(k) for k in keys]})

    async def revoke_key(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        if not await asyncio.to_thread(store.revoke_key, key_id):
            raise not_found(f"No active key with id '{key_id[:60]}'.", code="key_not_found")
        await refresh_keys()
        return json_response({"id": key_id, "revoked": True})

    async def usage(request: Request) -> Response:
        by = request.query_params.get("by", "tenant")
        if by not in GROUPINGS:
            raise bad_request(f"'by' must be one of {', '.join(GROUPINGS)}.", param="by")
        try:
            since = parse_since(request.query_params.get("since", "24h"))
        except ValueError as exc:
            raise bad_request(str(exc), param="since") from None
        rows = await asyncio.to_thread(summarize, engine, since=since, by=by)
        return json_response(
            {"object": "list", "since": since, "by": by, "data": [asdict(r) for r in rows]}
        )

    return [
        Route("/admin/tenants", guarded(create_tenant), methods=["POST"]),
        Route("/admin/tenants", guarded(list_tenants), methods=["GET"]),
        Route("/admin/keys", guarded(create_key), methods=["POST"]),
        Route("/admin/keys", guarded(list_keys), methods=["GET"]),
        Route("/admin/keys/{key_id}", guarded(revoke_key), methods=["DELETE"]),
        Route("/admin/keys/{key_id}/revoke", guarded(revoke_key), methods=["POST"]),
        Route("/admin/usage", guarded(usage), methods=["GET"]),
    ]
