"""The Responses API's stored-response routes, and the parts of
POST /v1/responses that are not dispatch.

GET, DELETE, input_items and cancel read the tenant's `ResponsesStore`
(ledger/responses_store.py); a response of another tenant is "not found",
exactly like one that never existed, so ids leak nothing.

POST /v1/responses goes through the gateway's pipeline like every generation
call. Around the dispatch:

1. `creation = await begin_create(store, principal, body)`: decodes the body,
   expands previous_response_id into the conversation so far (this tenant's
   responses only) and fixes the Response's id and echo (`creation.context`).
2. Dispatch `creation.request`. To an upstream that speaks Responses:
   `CODEC.encode_request(req, upstream_model)` (it sends store: false and no
   previous_response_id: the state is Forebay's); to any other:
   gateway/translate.py's `check_translatable` first (what the codec marked
   native_only, such as hosted tools, is a 400), then
   that protocol's encoder. Relaying the client's bytes untouched is right only
   when the body has neither store (default true) nor previous_response_id,
   since the ids the client gets must be Forebay's.
3. Answer with `CODEC.encode_reply(reply, creation.context)`, or stream with
   `CODEC.stream_encoder(include_usage=True, ctx=creation.context)`.
4. `finish_create(store, creation, response)` with that Response (a stream's is
   the encoder's `response` after its last event; None if it never ended).

`create_route` does this through the pipeline (Gateway.handle with a route
parser): gateway/responses.py binds the Responses codec to the creation so the
dispatcher's translated replies and streams carry its context and are stored,
and marks a stateful request (store or previous_response_id) as not to be
relayed verbatim, even to a native upstream (why: its docstring). With
`background: true` (which needs store) the pipeline detaches after limits and
the ledger's begin, and api/responses_background.py runs the rest, answers
polls, cancels and stream resumes (GET ?stream=true&starting_after=N).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from forebay.api.errors import error_response
from forebay.api.responses_background import BackgroundRun, BackgroundRuns
from forebay.errors import ForebayError, bad_request
from forebay.gateway.auth import KeyRing, authenticate_tenant
from forebay.gateway.pipeline import Gateway, Run
from forebay.gateway.recorder import Exchange
from forebay.gateway.responses import parse_responses, strip_overrides
from forebay.gateway.validate import ParsedRequest
from forebay.ledger.responses_store import ResponsesStore
from forebay.protocols.canonical import GenRequest
from forebay.protocols.openai_responses import add_history, request_from
from forebay.protocols.openai_responses_items import Item, decode_input
from forebay.protocols.openai_responses_reply import ResponseContext, echo_of
from forebay.protocols.openai_responses_state import history, listed, record_of
from forebay.tenancy.keys import Principal
from forebay.upstreams.base import Endpoint, WireProtocol

MAX_ID = 100  # longer than any id Forebay makes: not found without a lookup
# GET's `include` values the API documents (IncludeEnum).
INCLUDABLE = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _not_found(response_id: str) -> ForebayError:
    return ForebayError(404, f"Response with id '{response_id[:MAX_ID]}' not found.", param=None)


def _tenant(principal: Principal) -> str:
    assert principal.tenant_id is not None  # authenticate_tenant refuses keys without one
    return principal.tenant_id


def _include(request: Request) -> None:
    """GET's `include` (include=a&include=b, or include[]=...): each a value the
    API documents; what they add is in the stored Response already, or has no
    meaning here (hosted tools' results)."""
    query = request.query_params
    for value in (*query.getlist("include"), *query.getlist("include[]")):
        if value not in INCLUDABLE:
            raise bad_request(f"include has an unknown value '{value[:80]}'.", param="include")


def _starting_after(request: Request) -> int:
    text = request.query_params.get("starting_after")
    if text is None:
        return -1
    if not text.isdigit() or len(text) > 9:
        raise bad_request(
            "starting_after must be a non-negative integer (a sequence number).",
            param="starting_after",
        )
    return int(text)


def responses_routes(
    store: ResponsesStore, keyring: KeyRing, runs: BackgroundRuns | None = None
) -> list[Route]:
    Handler = Callable[[Request, str, str], Awaitable[Response]]

    def route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                tenant = _tenant(authenticate_tenant(keyring, request))
                response_id = request.path_params["response_id"]
                if len(response_id) > MAX_ID:
                    raise _not_found(response_id)
                return await handler(request, tenant, response_id)
            except ForebayError as err:
                return error_response(err)

        return endpoint

    async def retrieve(request: Request, tenant: str, response_id: str) -> Response:
        _include(request)
        if request.query_params.get("stream", "false").lower() not in ("false", "0"):
            after = _starting_after(request)
            run = runs.get(tenant, response_id) if runs is not None else None
            if run is not None and run.streamed:
                return StreamingResponse(
                    runs.follow(run, after),  # type: ignore[union-attr]
                    media_type="text/event-stream",
                )
            if await store.get(tenant, response_id) is None:
                raise _not_found(response_id)
            raise bad_request(
                "Only a response created with background=true and stream=true can be "
                "streamed again, from the Forebay process that ran it, while it runs or "
                "shortly after; retrieve this one without stream.",
                param="stream",
            )
        record = await store.get(tenant, response_id)
        if record is None:
            raise _not_found(response_id)
        return _json(record.body)

    async def remove(request: Request, tenant: str, response_id: str) -> Response:
        if not await store.delete(tenant, response_id):
            raise _not_found(response_id)
        return _json({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(request: Request, tenant: str, response_id: str) -> Response:
        query = request.query_params
        limit_text = query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            raise bad_request("limit must be an integer from 1 to 100.", param="limit")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request("order must be asc or desc.", param="order")
        direction: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
        page = await store.input_items(
            tenant, response_id, after=query.get("after"), limit=int(limit_text), order=direction
        )
        if page is None:
            raise _not_found(response_id)
        data = listed(response_id, page.data)
        return _json(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": page.has_more,
            }
        )

    async def cancel(request: Request, tenant: str, response_id: str) -> Response:
        run = runs.get(tenant, response_id) if runs is not None else None
        if run is not None:
            return _json(await runs.cancel(run))  # type: ignore[union-attr]
        record = await store.get(tenant, response_id)
        if record is None:
            raise _not_found(response_id)
        if record.body.get("background") is not True:
            raise bad_request(
                "Only responses created with background=true can be cancelled; this one was not."
            )
        # Finished (here or on another replica), or left by a process that died:
        # cancelling again answers the final Response, as OpenAI does.
        return _json(record.body)

    path = "/v1/responses/{response_id}"
    return [
        Route(path, route(retrieve), methods=["GET"]),
        Route(path, route(remove), methods=["DELETE"]),
        Route(f"{path}/input_items", route(input_items), methods=["GET"]),
        Route(f"{path}/cancel", route(cancel), methods=["POST"]),
    ]


# ---------------------------------------------------------------- POST /v1/responses


@dataclass(slots=True)
class Creation:
    """One POST /v1/responses, decoded: `request` is what is dispatched (the
    stored conversation already in its messages); `context` fixes the id and
    echo of the Response to encode (encode_reply / stream_encoder take it)."""

    request: GenRequest
    context: ResponseContext
    input_items: list[Item]
    tenant_id: str
    store: bool
    background: bool = False


async def begin_create(store: ResponsesStore, principal: Principal, body: Any) -> Creation:
    """Decode a create request for `principal`'s tenant. previous_response_id
    is looked up among that tenant's responses only: another's is not found."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    tenant = _tenant(principal)
    items = decode_input(body.get("input", []))
    keep = body.get("store")
    if keep is not None and not isinstance(keep, bool):
        raise bad_request("store must be true or false.", param="store")
    # Background is this module's to run (the codec knows no such thing).
    background = body.pop("background", None)
    if background is not None and not isinstance(background, bool):
        raise bad_request("background must be true or false.", param="background")
    if background and keep is False:
        raise bad_request(
            "Background responses must be stored: send store: true (the default) with "
            "background: true.",
            param="background",
        )
    request = request_from(body, items)  # every check before any database read
    previous = body.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise bad_request(
                "previous_response_id must be a string.", param="previous_response_id"
            )
        chain = await store.conversation(tenant, previous) if len(previous) <= MAX_ID else None
        if chain is None:
            raise ForebayError(
                404,
                f"Previous response with id '{previous[:MAX_ID]}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if chain and chain[-1].status in ("queued", "in_progress"):
            # Its output is not known yet: continuing it would drop the turn.
            raise bad_request(
                f"Previous response with id '{previous}' is still {chain[-1].status}; "
                "wait until it completes (GET /v1/responses/{id}), then continue it.",
                param="previous_response_id",
                code="previous_response_in_progress",
            )
        add_history(request, body, items, history(chain))
    context = ResponseContext(model=body["model"], echo=echo_of(body))
    context.echo["background"] = bool(background)
    return Creation(request, context, items, tenant, keep is not False, bool(background))


def finish_create(store: ResponsesStore, creation: Creation, response: dict[str, Any]) -> bool:
    """Store the Response object the client got (unless store: false); True
    when queued. Never waits for the database (see ResponsesStore.save)."""
    if not creation.store:
        return False
    record = record_of(
        response,
        tenant_id=creation.tenant_id,
        input_items=creation.input_items,
        expires_at=store.expiry(float(response["created_at"])),
    )
    return store.save(record)


def create_route(
    gateway: Gateway, store: ResponsesStore, runs: BackgroundRuns | None = None
) -> Route:
    """POST /v1/responses; with `runs`, background: true runs there
    (api/responses_background.py), detached from the pipeline after its limits."""

    async def create(request: Request) -> Response:
        found: list[Creation] = []

        async def parse(principal: Principal, body: dict[str, Any]) -> ParsedRequest:
            creation = await begin_create(store, principal, strip_overrides(body))
            if creation.background and runs is None:
                raise bad_request("background responses are not enabled.", param="background")
            found.append(creation)
            stateful = creation.store or body.get("previous_response_id") is not None
            if creation.background and runs is not None:
                keep: Callable[[dict[str, Any]], object] = partial(runs.kept, creation.context.id)
            else:
                keep = partial(finish_create, store, creation)
            return parse_responses(
                body, creation.request, creation.context, keep, stateful=stateful
            )

        def detach(work: Run, ex: Exchange) -> Response | None:
            if not found or not found[0].background or runs is None:
                return None
            c = found[0]
            run = BackgroundRun(
                c.context.id, c.tenant_id, c.context, c.input_items, c.request.stream, ex
            )
            return runs.start(run, work)

        return await gateway.handle(
            request,
            Endpoint.RESPONSES,
            WireProtocol.OPENAI_RESPONSES,
            parse=parse,
            detach=detach if runs is not None else None,
        )

    return Route("/v1/responses", create, methods=["POST"])
