"""Simulated model servers over real HTTP: the openai SDK, timing vs the planner,
prefix caching, continuous batching and vLLM-style metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forebay.planner.performance import Replica
from forebay.sim.server import create_sim_app
from tests.support.servers import ServerThread

MODEL = "llama-3.1-8b"


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerThread]:
    with ServerThread(create_sim_app(MODEL, "h100-sxm", speedup=4.0)) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(sim: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def metrics(server: ServerThread) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_openai_sdk_chat_completion_and_stream(sim: ServerThread, sdk: openai.OpenAI) -> None:
    c = sdk
    reply = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=12
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    again = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=12
    )
    assert again.choices[0].message.content == reply.choices[0].message.content  # deterministic
    chunks = list(
        c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "stream please"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(text.split()) == 8
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    listed = c.models.list()
    assert [m.id for m in listed.data] == [MODEL]


def test_legacy_completions_and_errors(sim: ServerThread, sdk: openai.OpenAI) -> None:
    c = sdk
    done = c.completions.create(model=MODEL, prompt="once upon a time", max_tokens=5)
    assert done.choices[0].text and done.usage and done.usage.prompt_tokens == 4
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[], max_tokens=5)


def test_low_load_timing_matches_the_planner_within_10_percent(
    sim: ServerThread, sdk: openai.OpenAI
) -> None:
    replica: Replica = sim.server.config.app.state.replica  # type: ignore[attr-defined]
    c = sdk
    prompt = words(1500, start=100_000)  # unique: no prefix-cache hits
    started = time.monotonic()
    stream = c.completions.create(model=MODEL, prompt=prompt, max_tokens=48, stream=True)
    first_wall = None
    final = None
    for chunk in stream:
        if first_wall is None:
            first_wall = time.monotonic() - started
        final = chunk
    assert final is not None and first_wall is not None
    sim_timing = final.model_extra["forebay_sim"]  # type: ignore[index]
    ttft_pred, tpot_pred = replica.unloaded_latency(1500, 48)
    assert sim_timing["ttft_ms"] / 1e3 == pytest.approx(ttft_pred, rel=0.10)
    assert sim_timing["tpot_ms"] / 1e3 == pytest.approx(tpot_pred, rel=0.10)
    # The stream is paced in real time: the first token cannot arrive before the
    # simulated prefill has elapsed (scaled by the speed-up).
    assert first_wall * 4.0 >= 0.8 * ttft_pred


def test_prefix_reuse_lowers_time_to_first_token(sim: ServerThread, sdk: openai.OpenAI) -> None:
    c = sdk
    shared = words(3000, start=200_000)
    before = metrics(sim)

    def ttft(question: str) -> tuple[float, int]:
        reply = c.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": shared},
                {"role": "user", "content": question},
            ],
            max_tokens=4,
        )
        assert reply.usage and reply.usage.prompt_tokens_details
        return reply.model_extra["forebay_sim"]["ttft_ms"], (  # type: ignore[index]
            reply.usage.prompt_tokens_details.cached_tokens or 0
        )

    cold, cold_hits = ttft("first question")
    warm, warm_hits = ttft("a different second question")
    assert cold_hits == 0 and warm_hits >= 2990
    assert warm < cold / 3
    after = metrics(sim)
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    assert hits == warm_hits


async def test_continuous_batching_shares_steps_and_metrics_show_load() -> None:
    # speedup 0.5: each request runs long enough in real time that all eight are in
    # (four running, four waiting) before the first ends, however busy the machine.
    app = create_sim_app(MODEL, "h100-sxm", speedup=0.5, max_batch=4, kv_cache_tokens=64_000)
    with ServerThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

            async def one(i: int) -> dict[str, float]:
                body = {"model": MODEL, "prompt": words(200, start=i * 1000), "max_tokens": 60}
                resp = await http.post("/v1/completions", json=body)
                return dict(resp.json()["forebay_sim"])

            tasks = [asyncio.create_task(one(i)) for i in range(8)]
            # Poll (bounded) until all 8 have arrived and a batch is running, rather
            # than sleeping a fixed time: on a loaded machine arrivals spread out.
            deadline = time.monotonic() + 20
            while True:
                text = (await http.get("/metrics")).text
                seen = {
                    s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                }
                arrived = seen["vllm:num_requests_running"] + seen["vllm:num_requests_waiting"]
                # All in, and the next step has filled the batch (the first to arrive
                # may have started alone).
                full = seen["vllm:num_requests_running"] >= 4
                if (arrived >= 8 and full) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            results = await asyncio.gather(*tasks)
        engine = app.state.engine
    assert seen["vllm:num_requests_running"] == 4  # the batch limit
    assert seen["vllm:num_requests_waiting"] == 4
    assert 0 < seen["vllm:gpu_cache_usage_perc"] < 1
    # Eight requests of 60 tokens in batches of four: far fewer steps than 8 x 61.
    assert engine.steps < 8 * 61 / 2
    replica = app.state.replica
    _, lone_tpot = replica.unloaded_latency(200, 60)
    assert all(r["tpot_ms"] / 1e3 > lone_tpot for r in results)  # batching slows each a bit
    queued = sorted(r["ttft_ms"] for r in results)
    assert queued[-1] > 10 * queued[0]  # the second wave waited for a free slot


async def test_bounded_kv_cache_preempts_and_still_finishes() -> None:
    # speedup 5 (not 50): each request lasts long enough in real time that all four
    # overlap even when a loaded machine spaces their arrivals out.
    app = create_sim_app(MODEL, "h100-sxm", speedup=5.0, max_batch=16, kv_cache_tokens=1024)
    with ServerThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

            async def one(i: int) -> int:
                body = {"model": MODEL, "prompt": words(300, start=i * 1000), "max_tokens": 100}
                resp = await http.post("/v1/completions", json=body)
                return int(resp.json()["usage"]["completion_tokens"])

            done = await asyncio.gather(*(one(i) for i in range(4)))
            text = (await http.get("/metrics")).text
    assert done == [100] * 4
    assert "vllm:num_preemptions_total" in text
    preempted = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "vllm:num_preemptions_total"
    ]
    assert preempted and preempted[0] > 0
