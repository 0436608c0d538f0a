"""Worker process: all-MiniLM-L6-v2 sentence embeddings over onnxruntime.

A small OpenAI-compatible server (`/v1/embeddings`, `/v1/models`, `/health`).
Inference runs in a thread so the server keeps answering health checks while a
batch is being embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from typing import Any

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forebay.upstreams.local.lifeline import exit_with_parent
from forebay.upstreams.local.model_files import minilm_onnx, minilm_tokenizer

MAX_TOKENS = 256  # the model's trained sequence length (sentence-transformers max_seq_length)
MAX_INPUTS = 2048  # OpenAI's own per-request limit on inputs


class MiniLM:
    def __init__(self, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(minilm_tokenizer()))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(minilm_onnx()), opts, providers=["CPUExecutionProvider"]
        )

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Mean-pooled, L2-normalised vectors (as sentence-transformers does) and
        the number of real (unpadded) tokens."""
        encs = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None), int(mask.sum())


def _error(status: int, message: str, param: str | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param}}
    return Response(orjson.dumps(body), status, media_type="application/json")


def _inputs(body: Any) -> list[str] | Response:
    raw = body.get("input") if isinstance(body, dict) else None
    texts = [raw] if isinstance(raw, str) else raw
    if isinstance(texts, list) and texts and isinstance(texts[0], int | list):
        return _error(
            400,
            "this local model embeds text: send 'input' as strings, not token ids "
            "(its tokenizer is not the one that made them)",
            "input",
        )
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return _error(400, "'input' must be a non-empty string or list of strings", "input")
    if len(texts) > MAX_INPUTS:
        return _error(400, f"at most {MAX_INPUTS} inputs per request", "input")
    if any(not t for t in texts):
        return _error(400, "'input' must not contain empty strings", "input")
    return texts


def create_app(model: MiniLM, model_name: str, parallel: int = 2) -> Starlette:
    # At most `parallel` batches at once: the gateway's concurrency limit for this
    # deployment is the same number, so requests wait in its admission queue.
    running = asyncio.Semaphore(parallel)

    async def embeddings(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not valid JSON")
        texts = _inputs(body)
        if isinstance(texts, Response):
            return texts
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return _error(400, "'encoding_format' must be 'float' or 'base64'", "encoding_format")
        async with running:
            vectors, tokens = await asyncio.to_thread(model.embed, texts)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                if fmt == "base64"
                else v.tolist(),
            }
            for i, v in enumerate(vectors)
        ]
        out = {
            "object": "list",
            "data": data,
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(orjson.dumps(out), media_type="application/json")

    async def models(_: Request) -> Response:
        entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "forebay"}
        return Response(orjson.dumps({"object": "list", "data": [entry]}))

    async def health(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", health),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--model-name", default="all-minilm-l6-v2")
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    exit_with_parent(args.parent_pid)
    started = time.monotonic()
    app = create_app(MiniLM(args.threads), args.model_name, args.parallel)
    print(f"MiniLM loaded in {time.monotonic() - started:.2f}s", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
