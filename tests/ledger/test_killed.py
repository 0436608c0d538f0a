"""SIGKILL loses no usage (issue 8, item 4): `forebay serve` killed under load
(non-streams, streams, slow streams in flight) and started again on the same
data dir has one row for every response a client received, a row marked
interrupted for every stream cut by the kill, and no request twice. And a
stream is recorded before the client gets its `[DONE]`, not after the
upstream hangs up."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from forebay.ledger.replay import INTERRUPTED, INTERRUPTED_STATUS
from tests.conftest import ADMIN_KEY, GatewayFactory, Upstream
from tests.support.ledger import read_ledger
from tests.support.process import ServeProcess
from tests.support.servers import ServerThread


@dataclass
class Outcome:
    kind: str
    request_id: str | None = None
    complete: bool = False


def _tenant_key(url: str) -> str:
    resp = httpx.post(
        f"{url}/admin/keys",
        json={"tenant": "default"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def _one(http: httpx.Client, kind: str) -> Outcome:
    model = {"plain": "echo", "stream": "echo", "slow": "drip"}[kind]
    body = {"model": model, "messages": [{"role": "user", "content": "one two three four"}]}
    out = Outcome(kind)
    try:
        if kind == "plain":
            resp = http.post("/v1/chat/completions", json=body)
            out.request_id = resp.headers.get("x-request-id")
            out.complete = resp.status_code == 200 and bool(resp.json()["choices"])
            return out
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
            out.request_id = resp.headers.get("x-request-id")
            for line in resp.iter_lines():
                if line == "data: [DONE]":
                    out.complete = resp.status_code == 200
    except httpx.HTTPError:
        pass  # cut by the kill: not complete
    return out


def test_sigkill_under_load_loses_no_usage(tmp_path: Path, upstream: Upstream) -> None:
    config = tmp_path / "forebay.yaml"
    # Large batches, and a flush interval far longer than the test: at the kill,
    # the writer holds events that only the spool can bring back.
    config.write_text(
        f"""
key_refresh_s: 0.2
ledger: {{batch_size: 1000, flush_interval_s: 30}}
models:
  echo:
    deployments:
      - {{name: fake-echo, base_url: "{upstream.base_url}", model: echo}}
  drip:
    deployments:
      - {{name: fake-drip, base_url: "{upstream.base_url}", model: drip-100}}
"""
    )
    data = tmp_path / "data"
    args = ("--config", str(config), "--data-dir", str(data))
    env = {"FOREBAY_ADMIN_KEY": ADMIN_KEY}
    log = tmp_path / "serve.log"
    first = ServeProcess(*args, log=log, env=env).start()
    outcomes: list[Outcome] = []
    killed = threading.Event()
    try:
        key = _tenant_key(first.url)
        headers = {"authorization": f"Bearer {key}"}

        def client(kind: str) -> None:
            with httpx.Client(base_url=first.url, headers=headers, timeout=30) as http:
                while not killed.is_set():
                    outcomes.append(_one(http, kind))  # list.append is atomic

        def complete_of(kind: str) -> int:
            return sum(o.complete and o.kind == kind for o in list(outcomes))

        kinds = ["plain"] * 4 + ["stream"] * 4 + ["slow"] * 3
        with ThreadPoolExecutor(len(kinds)) as pool:
            futures = [pool.submit(client, k) for k in kinds]
            # Until enough was served, whatever the machine's load; the slow
            # streams (5 s each, started back to back) are always in flight.
            deadline = time.monotonic() + 30
            while complete_of("plain") < 20 or complete_of("stream") < 10:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            first.kill()  # SIGKILL
            killed.set()
            for f in futures:
                f.result()
    finally:
        first.kill()
    served = [o for o in outcomes if o.complete]
    cut = [o for o in outcomes if o.request_id and not o.complete and o.kind != "plain"]
    assert len(served) >= 30 and sum(o.kind == "stream" for o in served) >= 10
    assert sum(o.kind == "slow" for o in cut) >= 2  # (one may be between two streams)

    second = ServeProcess(*args, log=log, env=env).start()  # replays before serving
    second.kill()
    rows = read_ledger(f"sqlite:///{data / 'forebay.db'}")
    by_id = {str(r["request_id"]): r for r in rows}
    assert len(by_id) == len(rows), "a request recorded twice"
    missing = [o for o in served if o.request_id not in by_id]
    assert not missing, f"{len(missing)} of {len(served)} served responses have no row"
    assert all(by_id[str(o.request_id)]["status"] == 200 for o in served)
    for o in cut:
        row = by_id.get(str(o.request_id))
        assert row is not None, f"a {o.kind} stream in flight at the kill has no row"
        if o.kind == "slow":  # certainly unfinished (a fast one may have had its [DONE] sent)
            assert (row["status"], row["error_type"]) == (INTERRUPTED_STATUS, INTERRUPTED)
            assert row["deployment"] == "fake-drip" and row["tenant_id"] and row["stream"]
    # The spool did the work: rows the writer still held at the kill were replayed.
    text = log.read_text()
    found = re.search(r"(\d+) served requests written .* (\d+) requests in flight", text)
    assert found is not None, text[-2000:]
    assert int(found.group(1)) > 0 and int(found.group(2)) >= 3


@pytest.fixture
def lingering_upstream() -> Iterator[tuple[str, threading.Event]]:
    """An upstream that sends a whole stream, `[DONE]` included, and then keeps
    the connection open until released."""
    release = threading.Event()

    async def chat(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for delta in ({"role": "assistant", "content": "hi"}, {"content": " there"}):
                chunk = {"object": "chat.completion.chunk", "choices": [{"delta": delta}]}
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
            yield b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"
            while not release.is_set():
                await asyncio.sleep(0.02)

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield f"{server.url}/v1", release
        release.set()


def test_a_stream_is_recorded_before_its_last_bytes_reach_the_client(
    make_gateway: GatewayFactory, lingering_upstream: tuple[str, threading.Event]
) -> None:
    base_url, release = lingering_upstream
    gw = make_gateway(
        f"""
    ledger: {{flush_interval_s: 0.05}}
    models:
      echo:
        deployments:
          - {{name: lingering, base_url: "{base_url}", model: echo}}
    """
    )
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    with (
        httpx.Client(base_url=gw.url, timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        rid = resp.headers["x-request-id"]
        for line in resp.iter_lines():
            if line == "data: [DONE]":
                break
        # The client has everything; the upstream has not hung up yet. The row
        # is already written (and so was its spool record, before the [DONE]).
        row = gw.row_for(rid, timeout=5)
        assert not release.is_set()
        assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (200, 7, 2)
        release.set()
    rows = gw.wait_rows(1)
    assert [r["request_id"] for r in rows] == [rid]
