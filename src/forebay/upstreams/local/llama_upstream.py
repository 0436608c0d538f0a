"""The gateway's side of the embedded llama.cpp worker: an OpenAI-compatible
upstream whose context-overflow error names the settings that size the context
(`local.ctx` shared by `local.parallel` slots), since only Forebay knows them."""

from __future__ import annotations

from typing import Any

import orjson

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.upstreams.base import Endpoint, UpstreamReply
from forebay.upstreams.openai_compat import OpenAICompatUpstream
from forebay.upstreams.stream import HttpStream


class LlamaWorkerUpstream(OpenAICompatUpstream):
    def __init__(self, deployment: Deployment, *, ctx: int, parallel: int, **kwargs: Any) -> None:
        super().__init__(deployment, **kwargs)
        self._ctx = ctx
        self._parallel = parallel

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> UpstreamReply:
        try:
            return await super().complete(endpoint, payload)
        except UpstreamFailure as failure:
            self._explain(failure)
            raise

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> HttpStream:
        try:
            return await super().open_stream(endpoint, payload)
        except UpstreamFailure as failure:
            self._explain(failure)
            raise

    def _explain(self, failure: UpstreamFailure) -> None:
        """Rewrite llama.cpp's `exceed_context_size_error` (a 400) in place."""
        if failure.status != 400 or b"exceed_context_size_error" not in failure.body:
            return
        try:
            error = orjson.loads(failure.body)["error"]
            prompt, per_slot = int(error["n_prompt_tokens"]), int(error["n_ctx"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        message = (
            f"The prompt is {prompt} tokens, over the {per_slot} tokens of context the "
            f"embedded model gives each request: local.ctx {self._ctx} is shared by "
            f"local.parallel {self._parallel} slots ({self._ctx} / {self._parallel}). "
            "Shorten the prompt, or raise local.ctx or lower local.parallel in forebay.yaml."
        )
        failure.body = orjson.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                    "param": "messages",
                }
            }
        )
