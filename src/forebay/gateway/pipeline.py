"""The request pipeline: auth → body → validate → model, scope and class →
limits → admission and routing → dispatch → record. Each stage lives in its
own module; this one only orders them and guarantees that every request is
recorded exactly once."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from forebay.config.settings import ModelAlias
from forebay.config.traffic import ResilienceConfig
from forebay.errors import ForebayError, forbidden, internal_error, not_found, too_large
from forebay.gateway.admission import Pool, Ticket
from forebay.gateway.auth import KeyRing, authenticate_tenant
from forebay.gateway.classes import resolve_class
from forebay.gateway.dispatch import Dispatcher
from forebay.gateway.failures import error_type_for
from forebay.gateway.health import DeploymentState
from forebay.gateway.hosted import route_native
from forebay.gateway.limits import Limiter
from forebay.gateway.messages import parse_messages
from forebay.gateway.recorder import Exchange, Recorder
from forebay.gateway.redact import Redactor
from forebay.gateway.request_headers import request_headers
from forebay.gateway.responses import prompt_body
from forebay.gateway.traffic import Traffic
from forebay.gateway.validate import ParsedRequest, kind_mismatch, parse_json, parse_request
from forebay.tenancy.keys import Principal
from forebay.upstreams.base import Endpoint, WireProtocol

log = logging.getLogger("forebay")

# How the body of each protocol but Chat (validate.parse_request) is parsed.
PARSERS: Mapping[WireProtocol, Callable[[dict[str, Any]], ParsedRequest]] = {
    WireProtocol.ANTHROPIC_MESSAGES: parse_messages,
}
# A parser the route brings, for a protocol whose decoding needs the caller and
# state the gateway does not hold (Responses: the tenant's stored conversations).
RouteParser = Callable[[Principal, dict[str, Any]], Awaitable[ParsedRequest]]
# Takes the rest of a request (dispatch and its recording, `run`) off the
# client's connection: it answers at once and runs `run` in a task it owns
# (Responses `background: true`, api/responses_background.py); None: not this
# request, which goes on as usual.
Run = Callable[[], Awaitable[Response]]
Detach = Callable[[Run, Exchange], Response | None]


class Gateway:
    def __init__(
        self,
        *,
        models: Mapping[str, ModelAlias],
        keyring: KeyRing,
        traffic: Traffic,
        recorder: Recorder,
        resilience: ResilienceConfig,
        max_body_bytes: int,
        limiter: Limiter | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._limiter = limiter
        self._models = models
        self._keyring = keyring
        self._traffic = traffic
        self._recorder = recorder
        self._dispatcher = Dispatcher(recorder, resilience, redactor or Redactor(()))
        self._limit = max_body_bytes

    def deployments(self, alias: str) -> Sequence[DeploymentState]:
        """The alias's deployments in their configured order (count_tokens asks one)."""
        return self._traffic.pools[alias].states

    async def handle(
        self,
        request: Request,
        endpoint: Endpoint,
        protocol: WireProtocol = WireProtocol.OPENAI_CHAT,
        parse: RouteParser | None = None,
        detach: Detach | None = None,
    ) -> Response:
        # Before the exchange: a failed authentication is counted and throttled
        # (auth_failures.py), never one ledger row each.
        principal = authenticate_tenant(self._keyring, request)
        ex = Exchange(endpoint, principal=principal)
        try:
            body = await read_body(request, self._limit)
            if protocol is WireProtocol.OPENAI_CHAT:
                req = parse_request(endpoint, parse_json(body, self._limit))
            else:
                ex.protocol = protocol
                obj = parse_json(body, self._limit)
                req = await parse(principal, obj) if parse is not None else PARSERS[protocol](obj)
            req.headers = request_headers(request).passed
            ex.stream = req.stream
            model = self._models.get(req.model)
            if model is None:
                raise not_found(
                    f"The model '{req.model[:200]}' does not exist; GET /v1/models lists "
                    "the models your key can use.",
                    param="model",
                )
            ex.alias = model.name
            if not principal.may_use(model.name):
                raise forbidden(
                    f"Your API key is not allowed to use model '{model.name}'; "
                    "GET /v1/models lists the ones it can, or ask your admin to widen its scope."
                )
            mismatch = kind_mismatch(endpoint, model.name, model.kind)
            if mismatch is not None:
                raise mismatch
            traffic = self._traffic
            if traffic.admission.enabled:
                class_name, cls = resolve_class(
                    principal,
                    request_headers(request).traffic_class,
                    traffic.classes,
                    traffic.admission.default_class,
                )
            else:  # FIFO: one queue, every request alike
                class_name = traffic.admission.default_class
                cls = traffic.classes[class_name]
            ex.class_name = class_name
            pool = traffic.pools[model.name]
            # What only a native deployment can serve (hosted tools): only
            # parsed protocols (never Chat) carry it.
            native = None
            if req.canonical is not None and req.canonical.extras:
                native = route_native(req, model, pool, ex)
            if native is None:
                pool.require_available(time.monotonic())  # before any limit is reserved
            else:
                pool.require_available(time.monotonic(), native.protocol, native.needed_for)
            hedge = cls.hedge and traffic.admission.enabled
            if self._limiter is not None:
                await self._limiter.admit(ex, model, req, hedged=hedge)
            tenant = principal.tenant_id or principal.key_id
            ticket = traffic.ticket(model.name, class_name, tenant, prompt_body(req))
            if native is not None:
                ticket.native, ticket.native_for = native.protocol, native.needed_for
            self._recorder.begin(ex)  # spooled: a crash from here on still leaves a row
            if detach is not None:
                detached = detach(lambda: self._detached(ex, req, pool, ticket, hedge), ex)
                if detached is not None:
                    return detached
            response = await self._dispatcher.send(ex, req, pool, ticket, hedge=hedge)
        except ForebayError as err:
            ex.fail(err.status, error_type_for(err))
            self._recorder.finish(ex)
            err.headers["x-request-id"] = ex.request_id
            raise
        except Exception as exc:
            # A bug, or something no stage expected: the caller gets the envelope
            # and the request id; the traceback goes to the log only.
            log.error("request %s failed inside Forebay", ex.request_id, exc_info=exc)
            ex.fail(500, "internal_error")
            self._recorder.finish(ex)
            raise internal_error(ex.request_id) from exc
        except BaseException:
            ex.fail(500, "internal_error")
            self._recorder.finish(ex)
            raise
        if not isinstance(response, StreamingResponse):
            self._recorder.finish(ex)
        return response

    async def _detached(
        self, ex: Exchange, req: ParsedRequest, pool: Pool, ticket: Ticket, hedge: bool
    ) -> Response:
        """Dispatch of a detached request, recorded exactly once like any other
        (a stream's body, which the caller consumes, records it as it ends)."""
        try:
            response = await self._dispatcher.send(ex, req, pool, ticket, hedge=hedge)
        except ForebayError as err:
            ex.fail(err.status, error_type_for(err))
            self._recorder.finish(ex)
            raise
        except Exception as exc:
            log.error("request %s failed inside Forebay", ex.request_id, exc_info=exc)
            ex.fail(500, "internal_error")
            self._recorder.finish(ex)
            raise internal_error(ex.request_id) from exc
        except BaseException:  # cancelled: POST /v1/responses/{id}/cancel, or shutdown
            ex.fail(499, "cancelled")
            self._recorder.finish(ex)
            raise
        if not isinstance(response, StreamingResponse):
            self._recorder.finish(ex)
        return response


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing anything over `limit` before it is buffered or parsed."""
    declared = request_headers(request).content_length
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large(limit)
        except ValueError:
            raise ForebayError(400, "The Content-Length header is not a number.") from None
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            parts.append(chunk)
    except ClientDisconnect:
        # The client went away mid-upload (or the server's body timeout cut it):
        # its fault, not ours, and no one is left to read the answer.
        raise ForebayError(
            499,
            "The client closed the connection before sending the whole body.",
            code="client_disconnected",
        ) from None
    return parts[0] if len(parts) == 1 else b"".join(parts)
