"""One adapter for every OpenAI-compatible server: vLLM, SGLang, llama.cpp,
Ollama, TGI, and the embedded local worker (OpenAI's own API is openai.py, a
subclass). Every endpoint is POST {base_url}/{endpoint}, with a bearer key."""

from __future__ import annotations

from collections.abc import Callable

from forebay.config.settings import Deployment
from forebay.upstreams.base import WireProtocol
from forebay.upstreams.http_base import HttpUpstream
from forebay.upstreams.transport import request_headers


class OpenAICompatUpstream(HttpUpstream):
    # Some of these servers speak Responses or Messages too, not all and not fully.
    wire = frozenset({WireProtocol.OPENAI_CHAT})

    def __init__(
        self,
        deployment: Deployment,
        *,
        base_url: str | None = None,
        ready: Callable[[], bool] | None = None,
        supervised: bool = False,
    ) -> None:
        super().__init__(
            deployment,
            headers=request_headers(deployment),
            base_url=base_url,
            ready=ready,
            supervised=supervised,
        )
