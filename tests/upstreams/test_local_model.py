"""The embedded local models, end to end: the unmodified openai SDK against a
gateway whose `local` and `local-embed` aliases are served by real worker
processes (llama.cpp via xllamacpp, MiniLM via onnxruntime)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Gateway, start_gateway

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp("local")
    config = """
    local: {ctx: 2048, parallel: 2}
    ledger: {flush_interval_s: 0.05}
    """
    gateway = start_gateway(config, workdir=workdir)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as sdk:
        yield sdk


def test_models_lists_both_local_aliases(gw: Gateway, client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"local", "local-embed"}


def test_chat_generates_real_tokens(gw: Gateway, client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        temperature=0,
    )
    assert resp.choices[0].message.content
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 5
    assert 0 < resp.usage.completion_tokens <= 8


def test_chat_stream_with_usage_matches_streamed_text(gw: Gateway, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens <= 12


async def test_async_client_completions(gw: Gateway) -> None:
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)
    results = await asyncio.gather(
        *(
            client.completions.create(model="local", prompt="The sky is", max_tokens=4)
            for _ in range(3)
        )
    )
    await client.close()
    assert all(r.choices[0].text for r in results)


def test_embeddings_are_normalised_and_meaningful(gw: Gateway, client: openai.OpenAI) -> None:
    resp = client.embeddings.create(
        model="local-embed", input=["a cat sat on the mat", "a kitten on a rug", "bond yields rose"]
    )
    vecs = [d.embedding for d in resp.data]
    assert len(vecs) == 3 and len(vecs[0]) == 384
    assert math.isclose(sum(x * x for x in vecs[0]), 1.0, rel_tol=1e-3)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.2
    assert resp.usage.prompt_tokens > 10


def test_token_ids_are_refused_by_the_local_embedder_saying_why(client: openai.OpenAI) -> None:
    """Token-array input is valid (and passed on), but MiniLM's ids are not the
    ones a client's tokenizer made: the local worker says so, as a 400."""
    for tokens in ([1212, 318, 257], [[1212, 318], [257]]):
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="local-embed", input=tokens)
        assert caught.value.param == "input" and "not token ids" in caught.value.message


def test_ledger_records_local_requests_with_real_token_counts(
    gw: Gateway, client: openai.OpenAI
) -> None:
    resp = client.chat.completions.with_raw_response.create(
        model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["deployment"] == "local-smollm2"
    assert row["status"] == 200 and row["tokens_estimated"] == 0
    assert isinstance(row["energy_wh"], float) and row["energy_wh"] > 0


def test_killed_worker_gives_503_then_recovers(gw: Gateway) -> None:
    worker = gw.services.upstreams.workers["local-smollm2"]
    restarts = worker.restarts
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    body = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    statuses: list[int] = []
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=gw.base_url, headers=headers, timeout=30) as http:
        while time.monotonic() < deadline:
            resp = http.post("/chat/completions", json=body)
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                break
            assert resp.status_code == 503, resp.text
            assert resp.headers["retry-after"]
            assert resp.json()["error"]["message"]
            time.sleep(0.05)
    assert statuses[0] == 503, "the dead worker was not noticed"
    assert statuses[-1] == 200, "the worker did not come back"
    assert worker.restarts == restarts + 1
    metrics = httpx.get(
        f"{gw.url}/metrics", headers={"authorization": f"Bearer {gw.admin_key}"}
    ).text
    assert (
        f'forebay_local_worker_restarts{{deployment="local-smollm2"}} {restarts + 1}.0' in metrics
    )
