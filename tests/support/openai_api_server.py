"""A loopback server for OpenAI's own API, as its reference documents it:
POST /v1/chat/completions and /v1/responses (whole or streamed, answers in
openai_answers.py), GET /v1/models, a bearer key (anything else: 401
invalid_api_key), the OpenAI-Organization / OpenAI-Project headers recorded,
and OpenAI's error envelope `{"error": {"message", "type", "param", "code"}}`.

Behaviour by model name (any other echoes the last user message):
  rate-limited  429 rate_limit_exceeded with retry-after: 7
  rate-reset    429 without retry-after; x-ratelimit-remaining-tokens 0, reset 1m30s
  quota         429 insufficient_quota (the account's billing), no retry-after
  server-error  500 server_error        overloaded  503 (engine overloaded)
  invalid       400 invalid_request_error, param messages, code context_length_exceeded
  missing       404 model_not_found, as for a model the key cannot use
  garbled       200 whose body is an HTML page (streams: events that are not JSON)
  drop          the connection drops half-way (streams: after two events)
  slow-<ms>     answers after <ms> milliseconds
  scripted      follows the server's `script` (tests/support/scripted.py) on
                /v1/responses: calls its tool, then quotes the tool's output
Every request is remembered in `seen`.
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
from tests.support.scripted import ToolScript, responses_turn

API_KEY = "sk-proj-test-0123456789abcdefghijklmnop"
MODELS = ("gpt-4o-mini", "gpt-4.1")


@dataclass
class OpenAIServer:
    api_key: str = API_KEY
    models: tuple[str, ...] = MODELS
    seen: list[Seen] = field(default_factory=list)
    script: ToolScript | None = None  # what the `scripted` model does

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
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
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return body, error(
                401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
            )
        return body, None

    async def list_models(self, request: Request) -> Response:
        _, refused = await self._admit(request)
        if refused is not None:
            return refused
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "openai"} for m in self.models
        ]
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, responses=False)

    async def responses(self, request: Request) -> Response:
        return await self._generate(request, responses=True)

    async def _generate(self, request: Request, *, responses: bool) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        model = str(body.get("model"))
        failed = _failure(model)
        if failed is not None:
            return failed
        await delay(model)
        if model == "scripted" and responses and self.script is not None:
            return answer(body, responses=True, scripted=responses_turn(self.script, body))
        return answer(body, responses=responses)


def error(
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    envelope = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(orjson.dumps(envelope), status, headers, media_type="application/json")


def _failure(model: str) -> Response | None:
    limits = {"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "30000"}
    if model == "rate-limited":
        headers = {**limits, "retry-after": "7", "x-ratelimit-remaining-requests": "0"}
        headers["x-ratelimit-reset-requests"] = "7s"
        return error(
            429,
            "Rate limit reached for requests",
            "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if model == "rate-reset":
        headers = {
            **limits,
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
        }
        headers |= {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s"}
        return error(
            429,
            "Rate limit reached for tokens",
            "tokens",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if model == "quota":
        message = "You exceeded your current quota, please check your plan and billing details."
        return error(429, message, "insufficient_quota", code="insufficient_quota")
    if model == "server-error":
        return error(500, "The server had an error while processing your request.", "server_error")
    if model == "overloaded":
        return error(
            503, "The engine is currently overloaded, please try again later.", "server_error"
        )
    if model == "missing":
        message = "The model `missing` does not exist or you do not have access to it."
        return error(404, message, "invalid_request_error", code="model_not_found")
    if model == "invalid":
        message = "This model's maximum context length is 128000 tokens."
        return error(
            400, message, "invalid_request_error", param="messages", code="context_length_exceeded"
        )
    return None
