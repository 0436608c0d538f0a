"""The OpenAI-compatible endpoints."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forebay.api.errors import error_response
from forebay.config.settings import ModelAlias
from forebay.errors import ForebayError, not_found
from forebay.gateway.auth import KeyRing, authenticate_tenant
from forebay.gateway.pipeline import Gateway
from forebay.upstreams.base import Endpoint


def openai_routes(
    gateway: Gateway, keyring: KeyRing, models: Mapping[str, ModelAlias]
) -> list[Route]:
    async def chat(request: Request) -> Response:
        return await gateway.handle(request, Endpoint.CHAT)

    async def completions(request: Request) -> Response:
        return await gateway.handle(request, Endpoint.COMPLETIONS)

    async def embeddings(request: Request) -> Response:
        return await gateway.handle(request, Endpoint.EMBEDDINGS)

    def visible(request: Request) -> list[ModelAlias]:
        principal = authenticate_tenant(keyring, request)
        return [m for m in models.values() if principal.may_use(m.name)]

    async def list_models(request: Request) -> Response:
        try:
            data = [_model_object(m) for m in visible(request)]
        except ForebayError as err:
            return error_response(err)
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            found = [m for m in visible(request) if m.name == name]
            if not found:
                raise not_found(
                    f"The model '{name[:200]}' does not exist or your key cannot use it."
                )
        except ForebayError as err:
            return error_response(err)
        return Response(orjson.dumps(_model_object(found[0])), media_type="application/json")

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]


def _model_object(m: ModelAlias) -> dict[str, object]:
    return {
        "id": m.name,
        "object": "model",
        "created": 0,
        "owned_by": "forebay",
        "kind": m.kind,
        "description": m.description,
    }
