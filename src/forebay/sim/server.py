"""A simulated OpenAI-compatible model server whose timing follows the planner's model.

Use it as a library to put realistic, GPU-free upstreams behind the gateway in tests and
benchmarks:

    from forebay.sim.server import create_sim_app
    app = create_sim_app("llama-3.1-8b", "h100-sxm", speedup=10)
    # serve `app` with uvicorn (or tests.support.servers.ServerThread); then
    # POST {url}/v1/chat/completions, GET {url}/metrics

`create_sim_app(model, gpu, *, tp=1, precision="bf16", kv_dtype="bf16", speedup=1.0,
max_batch=256, kv_cache_tokens=None, prefix_caching=True, served_model_name=None)`
returns a Starlette app serving /v1/chat/completions, /v1/completions (both with SSE
streaming and usage), /v1/models, /health and vLLM-style /metrics. Its engine
(`app.state.engine`) runs continuous batching over a bounded, prefix-caching KV cache;
each step lasts what `forebay.planner.performance.Replica.step` says, divided by
`speedup`. Output text is deterministic filler; every response carries
`forebay_sim: {ttft_ms, tpot_ms, cached_tokens}` measured on the simulated clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from forebay.planner.catalogue import (
    Accelerator,
    KvDtype,
    ModelSpec,
    Precision,
    accelerator,
    model,
)
from forebay.planner.performance import Replica
from forebay.sim.engine import Engine, SimRequest, running
from forebay.sim.metrics import SimMetrics
from forebay.sim.tokens import chat_prompt, filler, tokenize

DEFAULT_MAX_TOKENS = 256
MAX_BODY_BYTES = 4 * 1024 * 1024


def create_sim_app(
    model_spec: str | ModelSpec,
    gpu: str | Accelerator,
    *,
    tp: int = 1,
    precision: Precision = "bf16",
    kv_dtype: KvDtype = "bf16",
    speedup: float = 1.0,
    max_batch: int = 256,
    kv_cache_tokens: int | None = None,
    prefix_caching: bool = True,
    served_model_name: str | None = None,
) -> Starlette:
    """A simulated model server; see the module docstring."""
    spec = model(model_spec) if isinstance(model_spec, str) else model_spec
    acc = accelerator(gpu) if isinstance(gpu, str) else gpu
    replica = Replica(spec, acc, tp=tp, precision=precision, kv_dtype=kv_dtype, max_batch=max_batch)
    if not replica.fits:
        raise ValueError(f"{spec.key} in {precision} does not fit on {tp} x {acc.key}")
    name = served_model_name or spec.key
    metrics = SimMetrics(name)
    engine = Engine(
        replica,
        metrics,
        speedup=speedup,
        kv_cache_tokens=kv_cache_tokens,
        prefix_caching=prefix_caching,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(engine):
            yield

    async def chat(request: Request) -> Response:
        return await _complete(request, engine, name, chat=True)

    async def completions(request: Request) -> Response:
        return await _complete(request, engine, name, chat=False)

    async def models(request: Request) -> Response:
        card = {"id": name, "object": "model", "created": 0, "owned_by": "forebay-sim"}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> Response:
        return Response(b"")

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.replica = replica
    return app


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status
    )


async def _complete(request: Request, engine: Engine, name: str, *, chat: bool) -> Response:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, "request body too large")
    try:
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            raise TypeError
    except (orjson.JSONDecodeError, TypeError):
        return _error(400, "request body must be a JSON object")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        text = chat_prompt([m for m in messages if isinstance(m, dict)])
    else:
        prompt = body.get("prompt")
        text = " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt or "")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return _error(400, "max_tokens must be a positive integer")
    prompt_ids = tokenize(text) or [0]
    req = engine.submit(SimRequest(prompt_ids, max_tokens))
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    words = filler(hash(tuple(prompt_ids[:64])))
    if body.get("stream"):
        options = body.get("stream_options") or {}
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return StreamingResponse(
            _stream(request, engine, req, rid, created, name, chat, words, usage),
            media_type="text/event-stream",
        )
    pieces: list[str] = []
    try:
        while await req.events.get() is not None:
            pieces.append(next(words))
    finally:
        if req.finished_at is None:
            engine.cancel(req)
    if not pieces:
        return _error(400, "prompt does not fit in the simulated KV cache")
    text_out = "".join(pieces)
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text_out}
    else:
        choice["text"] = text_out
    payload = {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": name,
        "choices": [choice],
        "usage": _usage(req),
        "forebay_sim": _timings(req),
    }
    return Response(orjson.dumps(payload), media_type="application/json")


async def _stream(
    request: Request,
    engine: Engine,
    req: SimRequest,
    rid: str,
    created: int,
    name: str,
    chat: bool,
    words: Any,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": rid, "object": kind, "created": created, "model": name}

    def chunk(delta: str | None, finish: str | None, **extra: Any) -> bytes:
        if chat:
            body: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish}
            if delta is not None:
                body["delta"] = {"content": delta}
                if req.generated <= 1:
                    body["delta"]["role"] = "assistant"
        else:
            body = {"index": 0, "text": delta or "", "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [body], **extra}) + b"\n\n"

    try:
        while await req.events.get() is not None:
            yield chunk(next(words), None)
        yield chunk(None, "length", forebay_sim=_timings(req))
        if include_usage:
            yield b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(req)}) + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        if req.finished_at is None:
            engine.cancel(req)


def _usage(req: SimRequest) -> dict[str, Any]:
    return {
        "prompt_tokens": len(req.prompt),
        "completion_tokens": req.generated,
        "total_tokens": len(req.prompt) + req.generated,
        "prompt_tokens_details": {"cached_tokens": req.cached_tokens},
    }


def _timings(req: SimRequest) -> dict[str, Any]:
    ttft, tpot = req.ttft, req.tpot
    return {
        "ttft_ms": None if ttft is None else round(ttft * 1e3, 3),
        "tpot_ms": None if tpot is None else round(tpot * 1e3, 3),
        "cached_tokens": req.cached_tokens,
    }
