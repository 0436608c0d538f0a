"""A loopback server for Azure OpenAI, as Microsoft's reference documents it:
the deployment route POST /openai/deployments/{deployment}/chat/completions
?api-version=..., the v1 route POST /openai/v1/responses
(no api-version; the deployment is the body's `model`), GET /openai/v1/models;
the key in the `api-key` header, or an Entra ID token as `Authorization:
Bearer` when `bearer_token` is set; Azure's error bodies
(`{"error": {"code", "message"}}`, DeploymentNotFound, content_filter) and its
429 with `retry-after-ms` and `retry-after`. Answers are openai_answers.py's,
with Azure's content-filter annotations.

The deployment named decides the behaviour (any other known one echoes):
  rate-limited  429 with retry-after-ms: 1500 and retry-after: 2
  filtered      400 content_filter (innererror ResponsibleAIPolicyViolation)
  server-error  500 InternalServerError
  garbled, drop, slow-<ms>  as in openai_answers.py
A deployment not in `deployments` is 404 DeploymentNotFound; a missing or
unknown api-version, 404 Resource not found. Every request is remembered in `seen`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.anthropic_server import Seen
from tests.support.openai_answers import answer, delay

API_KEY = "0123456789abcdef0123456789abcdef"
API_VERSIONS = frozenset({"2024-10-21", "2025-04-01-preview"})
DEPLOYMENTS = frozenset(
    {
        "gpt-4o-prod",
        "rate-limited",
        "filtered",
        "server-error",
        "garbled",
        "drop",
        "slow-3000",
        "tools",
        "mid-error",
        "details-20-5",
    }
)


@dataclass
class AzureServer:
    api_key: str = API_KEY
    bearer_token: str | None = None
    deployments: frozenset[str] = DEPLOYMENTS
    seen: list[Seen] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/openai/deployments/{deployment}/chat/completions", self.chat, methods=["POST"]
                ),
                Route("/openai/v1/responses", self.responses, methods=["POST"]),
                Route("/openai/v1/models", self.list_models, methods=["GET"]),
            ]
        )

    async def _admit(self, request: Request) -> tuple[Any, Response | None]:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        headers = dict(request.headers)
        self.seen.append(
            Seen(request.method, request.url.path, request.url.query, headers, raw, body)
        )
        if self.bearer_token is not None:
            ok = headers.get("authorization") == f"Bearer {self.bearer_token}"
        else:
            ok = headers.get("api-key") == self.api_key
        if not ok:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource."
            )
            return body, error(401, "401", message)
        return body, None

    async def list_models(self, request: Request) -> Response:
        _, refused = await self._admit(request)
        if refused is not None:
            return refused
        data = [{"id": "gpt-4o-2024-11-20", "object": "model", "created_at": 0}]
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )

    async def chat(self, request: Request) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        if request.query_params.get("api-version") not in API_VERSIONS:
            return error(404, "404", "Resource not found")
        return await self._generate(request.path_params["deployment"], body, responses=False)

    async def responses(self, request: Request) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        return await self._generate(str(body.get("model")), body, responses=True)

    async def _generate(self, deployment: str, body: Any, *, responses: bool) -> Response:
        if deployment not in self.deployments:
            message = (
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again."
            )
            return error(404, "DeploymentNotFound", message)
        failed = _failure(deployment)
        if failed is not None:
            return failed
        await delay(deployment)
        return answer({**body, "model": deployment}, responses=responses, azure=True)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    envelope = {"error": {"code": code, "message": message}}
    return Response(orjson.dumps(envelope), status, headers, media_type="application/json")


def _failure(deployment: str) -> Response | None:
    if deployment == "rate-limited":
        message = (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. "
            "Please retry after 2 seconds."
        )
        headers = {
            "retry-after-ms": "1500",
            "retry-after": "2",
            "x-ratelimit-remaining-tokens": "0",
        }
        return error(429, "429", message, headers)
    if deployment == "filtered":
        envelope = {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
                "content management policy.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {"violence": {"filtered": True, "severity": "high"}},
                },
            }
        }
        return Response(orjson.dumps(envelope), 400, media_type="application/json")
    if deployment == "server-error":
        message = (
            "The service is temporarily unable to process your request. Please try again later."
        )
        return error(500, "InternalServerError", message)
    return None
