"""The Anthropic Messages endpoints: POST /v1/messages and
/v1/messages/count_tokens, with errors in Anthropic's envelope.

Keys come as `x-api-key` (Anthropic's SDKs) or `Authorization: Bearer`.
`anthropic-version` is read as Anthropic reads it, but leniently: a request
without it is served as 2023-06-01 (the version every current client sends),
and only a value that is no version date at all is refused with a 400.
Every error answered here carries an `x-request-id` (and the envelope's
`request_id`), those refused before the pipeline included.

count_tokens asks the alias's provider when it can count (gateway/token_count.py)
and estimates otherwise, saying which in `x-forebay-token-count`. It is a
request like any other: it needs a tenant's key and counts against the key's
and tenant's requests-per-minute limits (never their token limits or budgets:
it generates nothing), checked before any upstream is asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forebay.api.errors import anthropic_error_response
from forebay.config.settings import ModelAlias
from forebay.errors import ForebayError, bad_request, forbidden, not_found
from forebay.gateway.auth import KeyRing, authenticate_tenant
from forebay.gateway.limits import Limiter
from forebay.gateway.messages import count_tokens
from forebay.gateway.pipeline import Gateway, read_body
from forebay.gateway.recorder import new_request_id
from forebay.gateway.request_headers import request_headers
from forebay.gateway.token_count import HEADER as TOKEN_COUNT_HEADER
from forebay.gateway.token_count import count_input_tokens
from forebay.gateway.validate import parse_json
from forebay.upstreams.base import Endpoint, WireProtocol

_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


def check_version(value: str | None) -> None:
    if value is not None and not _VERSION.fullmatch(value.strip()):
        raise bad_request(
            f"anthropic-version: {value[:40]!r} is not an API version; send "
            "'anthropic-version: 2023-06-01'."
        )


def _refused(err: ForebayError, request_id: str) -> Response:
    err.headers.setdefault("x-request-id", request_id)
    return anthropic_error_response(err)


def anthropic_routes(
    gateway: Gateway,
    keyring: KeyRing,
    models: Mapping[str, ModelAlias],
    max_body_bytes: int,
    limiter: Limiter | None = None,
) -> list[Route]:
    async def messages(request: Request) -> Response:
        try:
            check_version(request_headers(request).anthropic_version)
            return await gateway.handle(request, Endpoint.MESSAGES, WireProtocol.ANTHROPIC_MESSAGES)
        except ForebayError as err:
            # The pipeline's errors carry their exchange's id; those before it get one.
            return _refused(err, new_request_id())

    async def count(request: Request) -> Response:
        """The prompt's tokens (its system prompt and tool definitions included)
        as the deployment's provider counts them, or an estimate. Returned as
        Anthropic returns a count."""
        request_id = new_request_id()
        try:
            principal = authenticate_tenant(keyring, request)
            check_version(request_headers(request).anthropic_version)
            body = parse_json(await read_body(request, max_body_bytes), max_body_bytes)
            canonical, estimate = count_tokens(body)
            model = canonical.model
            alias = models.get(model)
            if alias is None:
                raise not_found(f"model: {model[:200]!r} does not exist.", param="model")
            if not principal.may_use(alias.name):
                raise forbidden(f"Your API key is not allowed to use model '{alias.name}'.")
            headers = {"x-request-id": request_id}
            if limiter is not None:
                headers.update(await limiter.admit_request(principal, request_id))
            deployments = gateway.deployments(alias.name)
            tokens, source = await count_input_tokens(deployments, body, canonical, estimate)
            headers[TOKEN_COUNT_HEADER] = source
        except ForebayError as err:
            return _refused(err, request_id)
        return Response(
            orjson.dumps({"input_tokens": tokens}), headers=headers, media_type="application/json"
        )

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count, methods=["POST"]),
    ]
