"""Stage 2 for Responses API bodies: a `ParsedRequest` of a request that
api/responses.py has decoded (begin_create), with the codec that answers it.

Forebay keeps Responses state itself, so the client must get Forebay's ids.
Of the two ways to serve a stateful request (`store`, true by default, or a
`previous_response_id`) from an upstream that speaks Responses natively,
relaying its bytes and parsing them to store, or translating, Forebay
translates: the upstream gets the expanded conversation with `store: false`
(it knows none of Forebay's ids, and need keep nothing), and its reply is
decoded and encoded again under the id the client was promised, the same code
path as every other upstream, so the Response streamed, returned, stored and
retrieved agree whatever served the turn. The cost: an upstream's output
items with no canonical form (hosted tools' `web_search_call` and the like,
text annotations) are not in Forebay's Response. A request with `store:
false` and no `previous_response_id` is relayed untouched (bytes, ids and all).

`BoundResponses` is the Responses codec bound to one request: its replies
carry the request's `ResponseContext`, and the one the client gets is handed
to `keep` (the store) as soon as it is whole, before its last bytes are sent,
so the client's next request can continue it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forebay.gateway.validate import ROUTING_OVERRIDES, ParsedRequest
from forebay.protocols.canonical import (
    GenReply,
    GenRequest,
    StreamDecoder,
    StreamEncoder,
    StreamEvent,
)
from forebay.protocols.openai_responses import CODEC
from forebay.protocols.openai_responses_reply import ResponseContext
from forebay.protocols.openai_responses_stream import ResponsesStreamEncoder
from forebay.upstreams.base import Endpoint, WireProtocol

Keep = Callable[[dict[str, Any]], object]


def prompt_body(req: ParsedRequest) -> dict[str, Any]:
    """The body whose prompt limits bound (gateway/limits.py): the payload, but
    for a Responses request continuing a conversation by previous_response_id,
    whose payload holds only the new turn, the canonical request (the stored
    conversation expanded) as a Responses body, so the reservation covers all
    that the upstream is sent, not just the new turn. Built once a request:
    limits, the routing ticket and the estimates all read it."""
    if req.prompt_payload is not None:
        return req.prompt_payload
    canonical = req.canonical
    if (
        canonical is None
        or req.protocol is not WireProtocol.OPENAI_RESPONSES
        or req.payload.get("previous_response_id") is None
    ):
        req.prompt_payload = req.payload
    else:
        req.prompt_payload = CODEC.encode_request(canonical, req.model)
    return req.prompt_payload


def strip_overrides(body: dict[str, Any]) -> dict[str, Any]:
    for field in ROUTING_OVERRIDES.intersection(body):
        del body[field]
    return body


def parse_responses(
    body: dict[str, Any],
    request: GenRequest,
    ctx: ResponseContext,
    keep: Keep,
    *,
    stateful: bool,
) -> ParsedRequest:
    """`request` is the body decoded (its stored conversation expanded);
    `stateful`: the body has store (default true) or previous_response_id."""
    return ParsedRequest(
        Endpoint.RESPONSES,
        body,
        request.model,
        request.stream,
        include_usage=True,  # a Response always carries its usage
        protocol=WireProtocol.OPENAI_RESPONSES,
        canonical=request,
        inbound=BoundResponses(ctx, keep),
        verbatim=not stateful,
    )


class _KeepingEncoder:
    """The stream encoder of one try; what it answered is kept once the try
    is the one the client gets (`commit`) and its Response is whole."""

    def __init__(self, ctx: ResponseContext, keep: Keep) -> None:
        self._inner = ResponsesStreamEncoder(ctx)
        self._keep = keep
        self._committed = False
        self._kept = False

    def encode(self, event: StreamEvent) -> bytes:
        out = self._inner.encode(event)
        self._maybe_keep()
        return out

    def commit(self) -> None:
        self._committed = True
        self._maybe_keep()

    def _maybe_keep(self) -> None:
        if self._committed and not self._kept and self._inner.response is not None:
            self._kept = True
            self._keep(self._inner.response)


class BoundResponses:
    """The Responses codec for one request: a `Codec`."""

    name = CODEC.name

    def __init__(self, ctx: ResponseContext, keep: Keep) -> None:
        self._ctx = ctx
        self._keep = keep

    def decode_request(self, body: dict[str, Any]) -> GenRequest:
        return CODEC.decode_request(body)

    def encode_request(self, req: GenRequest, model: str) -> dict[str, Any]:
        return CODEC.encode_request(req, model)

    def decode_reply(self, body: dict[str, Any]) -> GenReply:
        return CODEC.decode_reply(body)

    def encode_reply(self, reply: GenReply) -> dict[str, Any]:
        # Called once, for the reply the client gets (dispatch._complete).
        response = CODEC.encode_reply(reply, self._ctx)
        self._keep(response)
        return response

    def stream_decoder(self) -> StreamDecoder:
        return CODEC.stream_decoder()

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder:
        return _KeepingEncoder(self._ctx, self._keep)
