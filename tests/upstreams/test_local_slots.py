"""The embedded llama.cpp worker runs at most `local.parallel` requests, so the
rest wait in Forebay's admission queue (served by class priority, shed per
class) instead of queueing inside llama.cpp where no class applies. The worker
ports are the configured ones, and a prompt over the per-slot context names
local.ctx and local.parallel."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Gateway, start_gateway
from tests.support.servers import free_port

pytestmark = pytest.mark.local_model

PARALLEL = 2
CTX = 1024
BURST = 4  # batch requests: PARALLEL run, the rest wait in the gateway


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, ports: tuple[int, int]) -> Iterator[Gateway]:
    llama_port, embed_port = ports
    config = f"""
    local: {{ctx: {CTX}, parallel: {PARALLEL}, port: {llama_port}, embed_port: {embed_port},
             embed_parallel: 3}}
    ledger: {{flush_interval_s: 0.05}}
    classes:
      realtime: {{priority: 0, ttft_slo_ms: 500, deadline_ms: 30000, max_queue_ms: 100}}
      interactive: {{priority: 1, ttft_slo_ms: 2000, deadline_ms: 600000, max_queue_ms: 300000}}
      batch: {{priority: 2, ttft_slo_ms: 60000, deadline_ms: 900000, max_queue_ms: 600000}}
    """
    gateway = start_gateway(config, workdir=tmp_path_factory.mktemp("slots"))
    yield gateway
    gateway.stop()


def test_workers_listen_on_the_configured_ports(gw: Gateway, ports: tuple[int, int]) -> None:
    llama_port, embed_port = ports
    workers = gw.services.upstreams.workers
    assert workers["local-smollm2"].port == llama_port
    assert workers["local-minilm"].port == embed_port
    for port in ports:
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    # llama.cpp itself reports the slots it was started with: the gateway's limit.
    slots = httpx.get(f"http://127.0.0.1:{llama_port}/slots").json()
    assert len(slots) == PARALLEL
    pools = gw.services.traffic.pools
    assert [s.limit for s in pools["local"].states] == [PARALLEL]
    assert [s.limit for s in pools["local-embed"].states] == [3]


class WorkerSampler:
    """Reads llama.cpp's own /metrics and the pool's counter while a burst runs."""

    def __init__(self, gw: Gateway, port: int) -> None:
        self._url = f"http://127.0.0.1:{port}/metrics"
        self._pool = gw.services.traffic.pools["local"]
        self.max_processing = 0.0
        self.max_deferred = 0.0
        self.max_active = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                text = http.get(self._url).text
                self.max_processing = max(self.max_processing, _gauge(text, "requests_processing"))
                self.max_deferred = max(self.max_deferred, _gauge(text, "requests_deferred"))
                self.max_active = max(self.max_active, self._pool.active)
                self.samples += 1
                time.sleep(0.02)

    def __enter__(self) -> WorkerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _gauge(text: str, name: str) -> float:
    found = re.search(rf"^llamacpp:{name} (\S+)$", text, re.MULTILINE)
    assert found, f"llama.cpp /metrics has no {name}"
    return float(found.group(1))


async def _chat(
    http: httpx.AsyncClient, cls: str, max_tokens: int, done: list[str], tag: str
) -> httpx.Response:
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # llama.cpp: generate exactly max_tokens
        "temperature": 0,
    }
    resp = await http.post("/chat/completions", json=body, headers={"x-forebay-class": cls})
    done.append(tag)
    return resp


async def test_burst_waits_in_forebay_by_class_not_inside_llama_cpp(gw: Gateway) -> None:
    pool = gw.services.traffic.pools["local"]
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    done: list[str] = []
    worker = gw.services.upstreams.workers["local-smollm2"]
    with WorkerSampler(gw, worker.port) as sampler:
        async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=180) as http:
            batch = [
                asyncio.create_task(_chat(http, "batch", 48, done, f"batch-{i}"))
                for i in range(BURST)
            ]
            deadline = time.monotonic() + 20
            while pool.waiting_by_class().get("batch", 0) < BURST - PARALLEL:
                assert time.monotonic() < deadline, "the burst never queued in the gateway"
                await asyncio.sleep(0.005)
            realtime = asyncio.create_task(_chat(http, "realtime", 4, done, "realtime"))
            interactive = asyncio.create_task(_chat(http, "interactive", 4, done, "interactive"))
            replies = await asyncio.gather(*batch, realtime, interactive)
    assert sampler.samples > 5
    assert sampler.max_processing <= PARALLEL
    assert sampler.max_deferred == 0, "requests queued inside llama.cpp"
    assert sampler.max_active <= PARALLEL
    assert [r.status_code for r in replies[:BURST]] == [200] * BURST
    # realtime may wait 100 ms; the slots were busy with long batch work: shed, at once.
    shed = replies[BURST]
    assert shed.status_code == 503 and shed.json()["error"]["code"] == "overloaded"
    assert shed.headers["retry-after"]
    # interactive outranks the queued batch requests: it took the first free slot,
    # so at most the batch requests already running finished before it.
    assert replies[BURST + 1].status_code == 200
    before = [tag for tag in done[: done.index("interactive")] if tag.startswith("batch")]
    assert len(before) <= PARALLEL, done
    assert pool.active == 0 and pool.waiting == 0


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_the_slot_context_names_ctx_and_parallel(gw: Gateway, stream: bool) -> None:
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": "hello world " * 400}],
        "max_tokens": 4,
        "stream": stream,
    }
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {gw.tenant_key}"},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    per_slot = CTX // PARALLEL
    assert f"local.ctx {CTX}" in message and f"local.parallel {PARALLEL}" in message
    assert f"{per_slot} tokens" in message, message
