"""Calls to a remote adapter, made the way the gateway makes them, for the
adapter tests and their shared failure modes (failure_modes.py).

The OpenAI wire (OpenAI, Azure OpenAI): the caller's body goes to the adapter
and the answer's bytes come back as they came. The canonical providers
(Gemini, Bedrock): a canonical request goes through the provider's codec, and
its reply or stream events come back decoded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from forebay.config.settings import Deployment
from forebay.protocols.canonical import (
    Codec,
    GenReply,
    GenRequest,
    Message,
    StreamEvent,
    TextPart,
)
from forebay.upstreams.base import Endpoint, Upstream
from forebay.upstreams.registry import remote_upstream

Call = Callable[[Deployment], Awaitable[Any]]


async def read(up: Upstream, endpoint: Endpoint, payload: dict[str, Any]) -> bytes:
    """A stream's bytes, joined, its slot released."""
    stream = await up.open_stream(endpoint, payload)
    try:
        return b"".join([c async for c in stream.chunks()])
    finally:
        stream.release()


def chat(model: str = "gpt-4o-mini", text: str = "hello there world", **extra: Any) -> Any:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def responses(model: str = "gpt-4o-mini", text: str = "hello there world", **extra: Any) -> Any:
    return {"model": model, "input": text, **extra}


def _openai_wire(endpoint: Endpoint, *, stream: bool) -> Call:
    async def call(dep: Deployment) -> bytes:
        build = chat if endpoint is Endpoint.CHAT else responses
        payload = build(dep.upstream_model, "hello there world")
        up = remote_upstream(dep)
        try:
            if stream:
                return await read(up, endpoint, {**payload, "stream": True})
            return (await up.complete(endpoint, payload)).body
        finally:
            await up.close()

    return call


OPENAI_WIRE = {
    "chat": _openai_wire(Endpoint.CHAT, stream=False),
    "chat-stream": _openai_wire(Endpoint.CHAT, stream=True),
    "responses": _openai_wire(Endpoint.RESPONSES, stream=False),
    "responses-stream": _openai_wire(Endpoint.RESPONSES, stream=True),
}


def ask(text: str, **kw: Any) -> GenRequest:
    return GenRequest(model="m", messages=[Message("user", [TextPart(text)])], **kw)


async def complete(
    codec: Codec, dep: Deployment, req: GenRequest, *, body_model: str | None = None
) -> GenReply:
    """`body_model`: the body's `model` (by default the deployment's), which
    these providers take from the path, never from the body."""
    up = remote_upstream(dep)
    try:
        payload = codec.encode_request(req, dep.upstream_model)
        payload["model"] = body_model or dep.upstream_model
        reply = await up.complete(Endpoint.MESSAGES, payload)
        return codec.decode_reply(orjson.loads(reply.body))
    finally:
        await up.close()


async def stream(
    codec: Codec, dep: Deployment, req: GenRequest, *, piece: int = 0
) -> list[StreamEvent]:
    """The decoded events; `piece` re-cuts the bytes into pieces of that size."""
    up = remote_upstream(dep)
    decoder = codec.stream_decoder()
    events: list[StreamEvent] = []
    try:
        handle = await up.open_stream(
            Endpoint.MESSAGES, codec.encode_request(req, dep.upstream_model)
        )
        try:
            async for chunk in handle.chunks():
                step = piece or len(chunk)
                for i in range(0, len(chunk), step):
                    events += decoder.feed(chunk[i : i + step])
        finally:
            handle.release()
        events += decoder.close()
    finally:
        await up.close()
    return events


def canonical(codec: Codec) -> dict[str, Call]:
    """Whole, streamed, and streamed in 7-byte pieces (a frame split anywhere)."""
    req = ask("two words")
    return {
        "whole": lambda dep: complete(codec, dep, req),
        "stream": lambda dep: stream(codec, dep, req),
        "stream-in-pieces": lambda dep: stream(codec, dep, req, piece=7),
    }
