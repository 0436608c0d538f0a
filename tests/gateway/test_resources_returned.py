"""Every slot, retry-budget count and in-flight gauge a request takes comes
back, whatever becomes of the request: malformed upstream HTTP, a body that
cannot be re-encoded, a client that leaves, a cancelled request, a hedge's
loser, an unexpected exception. After each, the pool is back to zero and the
model still serves."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any

import httpx
import orjson
import pytest

from forebay.upstreams.base import Endpoint, Upstream, UpstreamReply, UpstreamStream
from tests.conftest import Gateway, GatewayFactory
from tests.support.openai_server import FakeUpstream
from tests.support.raw_upstream import MALFORMED_MODELS, RawUpstream
from tests.support.servers import ServerThread

SLOTS = 4  # max_concurrency of the deployment under test


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    with RawUpstream() as server:
        yield server


@pytest.fixture
def fake() -> Iterator[str]:
    with ServerThread(FakeUpstream().app()) as server:
        yield f"{server.url}/v1"


@pytest.fixture
def gw(make_gateway: GatewayFactory, raw: RawUpstream, fake: str) -> Gateway:
    fixed = "adaptive_concurrency: false"
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    resilience: {{backoff_base_ms: 50, backoff_cap_ms: 400}}
    classes:
      realtime: {{priority: 0, ttft_slo_ms: 100, deadline_ms: 9000, max_queue_ms: 900,
                 hedge: true}}
      interactive: {{priority: 1, ttft_slo_ms: 2000, deadline_ms: 30000, max_queue_ms: 5000}}
    models:
      m:
        deployments:
          - {{name: dep-m, base_url: "{raw.base_url}", model: ok, max_concurrency: {SLOTS},
             timeout_s: 2, first_byte_timeout_s: 3, {fixed}}}
      drip:
        deployments:
          - {{name: dep-drip, base_url: "{fake}", model: drip-100, {fixed}}}
      hedged:
        deployments:
          - {{name: slow, base_url: "{fake}", model: slow-1500, {fixed}}}
          - {{name: fast, base_url: "{fake}", model: echo, {fixed}}}
      raced:
        deployments:
          - {{name: bursts, base_url: "{fake}", model: slow-300, {fixed}}}
          - {{name: slower, base_url: "{fake}", model: slow-2000, {fixed}}}
    """
    )


def _body(content: str, model: str = "m", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def _post(gw: Gateway, content: str, model: str = "m", **extra: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    cls = extra.pop("cls", None)
    if cls:
        headers["x-forebay-class"] = str(cls)
    return httpx.post(
        f"{gw.base_url}/chat/completions",
        json=_body(content, model, **extra),
        headers=headers,
        timeout=30,
    )


def _busy(gw: Gateway) -> dict[str, dict[str, object]]:
    """Every pool that still holds something: slots, requests, retries."""
    busy = {}
    for alias, pool in gw.services.traffic.pools.items():
        held = {
            "active": pool.active,
            "requests_in_flight": pool.requests_in_flight,
            "retries_in_flight": pool.retries_in_flight,
            "inflight": {s.name: s.inflight for s in pool.states if s.inflight},
        }
        if any(held.values()):
            busy[alias] = held
    return busy


def _settled(gw: Gateway, timeout: float = 10) -> dict[str, dict[str, object]]:
    """What is still held once the request is over (streams finish a moment later)."""
    deadline = time.monotonic() + timeout
    while (busy := _busy(gw)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return busy


def _in_gateway_loop(gw: Gateway, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on the gateway's own event loop (its pools live there)."""
    assert gw.server.loop is not None
    return asyncio.run_coroutine_threadsafe(coro, gw.server.loop).result(60)


def _still_serves(gw: Gateway) -> None:
    resp = _post(gw, "hello")
    assert resp.status_code == 200, resp.text
    assert _settled(gw) == {}


# aiohttp never reports a bad chunk-size line that follows a good chunk (the read
# hangs): the deployment's own limits end the wait, as a timeout.
HANGS = {"sse-bad-chunk"}


def _envelope(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-request-id"].startswith("req_")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


# -- malformed HTTP from the upstream ------------------------------------------------


@pytest.mark.parametrize("behaviour", MALFORMED_MODELS)
def test_malformed_upstream_answer_gives_every_slot_back(
    gw: Gateway, raw: RawUpstream, behaviour: str
) -> None:
    resp = _post(gw, f"as {behaviour}")
    status = 504 if behaviour in HANGS else 502
    err = _envelope(resp, status)
    assert "dep-m" in err["message"] and "Traceback" not in err["message"]
    assert _settled(gw) == {}
    _still_serves(gw)
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["status"] == status


@pytest.mark.parametrize("behaviour", MALFORMED_MODELS)
def test_malformed_upstream_stream_gives_every_slot_back(gw: Gateway, behaviour: str) -> None:
    resp = _post(gw, f"as {behaviour}", stream=True)
    if behaviour.startswith("sse-"):  # it broke after the first event reached the client
        assert resp.status_code == 200
        events = [line for line in resp.text.splitlines() if line.startswith("data: ")]
        assert '"Hel"' in events[0]
        assert "upstream_stream_failed" in events[-2] and events[-1] == "data: [DONE]"
        assert '{"del' not in resp.text  # the torn event is not relayed
    else:
        _envelope(resp, 502)
    assert _settled(gw) == {}
    _still_serves(gw)
    status = 504 if behaviour in HANGS else 502
    assert gw.row_for(resp.headers["x-request-id"])["status"] == status


def test_a_burst_of_malformed_answers_does_not_take_the_model_down(
    gw: Gateway, raw: RawUpstream
) -> None:
    """The issue: 8 such requests took a model down for every tenant."""
    failing = [MALFORMED_MODELS[i % len(MALFORMED_MODELS)] for i in range(2 * SLOTS * 2)]

    async def burst() -> list[httpx.Response]:
        headers = {"authorization": f"Bearer {gw.tenant_key}"}
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        f"{gw.base_url}/chat/completions",
                        json=_body(f"as {b}", stream=i % 2 == 1),
                        headers=headers,
                    )
                    for i, b in enumerate(failing)
                )
            )

    resps = asyncio.run(burst())
    # 200: streams that broke mid-way; 504: those aiohttp hangs on
    assert {r.status_code for r in resps} <= {200, 502, 504}
    assert _settled(gw) == {}
    ok = asyncio.run(_many_ok(gw, SLOTS))
    assert [r.status_code for r in ok] == [200] * SLOTS


async def _many_ok(gw: Gateway, n: int) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    async with httpx.AsyncClient(timeout=30) as http:
        return await asyncio.gather(
            *(
                http.post(f"{gw.base_url}/chat/completions", json=_body("hi"), headers=headers)
                for _ in range(n)
            )
        )


# -- bodies that cannot be re-encoded ------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_too_deeply_nested_body_is_refused_before_dispatch(gw: Gateway, raw: RawUpstream) -> None:
    # orjson reads 1,024 levels but writes only 255: this one could not be sent on.
    deep = b"[" * 300 + b'"leaf"' + b"]" * 300  # orjson.dumps could not even write it
    body = orjson.dumps(_body("hi", metadata={"x": "DEEP"})).replace(b'"DEEP"', deep)
    headers = {"authorization": f"Bearer {gw.tenant_key}", "content-type": "application/json"}
    resp = httpx.post(f"{gw.base_url}/chat/completions", content=body, headers=headers)
    err = _envelope(resp, 400)
    assert err["code"] == "too_deeply_nested" and "128" in err["message"]
    assert [s for s in raw.seen if s.method == "POST"] == []  # health probes GET /models
    assert _settled(gw) == {}
    # Nesting within the limit is sent on as it came.
    ok = httpx.post(
        f"{gw.base_url}/chat/completions",
        content=orjson.dumps(_body("hi", metadata={"x": _nested(60)})),
        headers=headers,
    )
    assert ok.status_code == 200, ok.text
    assert raw.seen[-1].body["metadata"] == {"x": _nested(60)}


# -- clients that leave, requests that are cancelled -----------------------------------


def test_client_leaving_mid_stream_gives_the_slot_back(gw: Gateway) -> None:
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            f"{gw.base_url}/chat/completions",
            json=_body("hi", "drip", stream=True),
            headers=headers,
        ) as resp,
    ):
        rid = resp.headers["x-request-id"]
        next(resp.iter_raw())
    assert _settled(gw) == {}
    row = gw.row_for(rid)
    assert (row["status"], row["error_type"]) == (499, "client_disconnected")


def test_client_leaving_before_the_first_byte_gives_the_slot_back(
    gw: Gateway, raw: RawUpstream
) -> None:
    """The stream opens after the client has gone (its body may never be read)."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gw.base_url}/chat/completions",
            json=_body("sleep 400", stream=True),
            headers={"authorization": f"Bearer {gw.tenant_key}"},
            timeout=httpx.Timeout(10, read=0.1),
        )
    deadline = time.monotonic() + 10
    while not raw.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.6)  # the upstream answers after 400 ms, to nobody
    assert _settled(gw) == {}
    rows = gw.wait_rows(1)
    assert rows[-1]["status"] in (200, 499)  # whether the relay ran first is a race
    _still_serves(gw)


async def _cancel_after(gw: Gateway, delay: float, body: dict[str, object], **kw: str) -> None:
    """A request through the gateway's real app, cancelled after `delay` s."""
    app = gw.server.server.config.app
    headers = {"authorization": f"Bearer {gw.tenant_key}", **kw}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
    ) as http:
        task = asyncio.create_task(http.post("/v1/chat/completions", json=body, headers=headers))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (_body("sleep 2000"), {}),  # waiting for the upstream's answer
        (_body("sleep 2000", stream=True), {}),  # waiting for a stream's first byte
        (_body("as hang-up"), {}),  # between retries (backoff)
        (_body("hi", "hedged"), {"x-forebay-class": "realtime"}),  # mid hedge race
    ],
    ids=["waiting", "first-byte", "backoff", "hedging"],
)
def test_cancelled_request_gives_everything_back(
    gw: Gateway, body: dict[str, object], headers: dict[str, str]
) -> None:
    delay = 0.4 if body["model"] == "hedged" else 0.3
    _in_gateway_loop(gw, _cancel_after(gw, delay, body, **headers))
    assert _settled(gw) == {}
    _still_serves(gw)


def test_cancelled_while_queued_gives_everything_back(gw: Gateway) -> None:
    async def run() -> None:
        app = gw.server.server.config.app
        headers = {"authorization": f"Bearer {gw.tenant_key}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
        ) as http:
            holders = [
                asyncio.create_task(
                    http.post("/v1/chat/completions", json=_body("sleep 600"), headers=headers)
                )
                for _ in range(SLOTS)
            ]
            await asyncio.sleep(0.2)
            queued = asyncio.create_task(
                http.post("/v1/chat/completions", json=_body("hi"), headers=headers)
            )
            await asyncio.sleep(0.1)
            assert gw.services.traffic.pools["m"].waiting == 1
            queued.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queued
            assert gw.services.traffic.pools["m"].waiting == 0
            assert all(r.status_code == 200 for r in await asyncio.gather(*holders))

    _in_gateway_loop(gw, run())
    assert _settled(gw) == {}


# -- hedging -------------------------------------------------------------------------


def test_hedge_loser_gives_its_slot_back(gw: Gateway) -> None:
    resp = _post(gw, "hi", "hedged", cls="realtime")
    assert resp.status_code == 200, resp.text
    assert "hedged after 100 ms: slow lost" in resp.headers["x-forebay-route"]
    assert _settled(gw) == {}


class _Exploding:
    """A deployment's real adapter, with a bug: after the real call it raises."""

    def __init__(self, inner: Upstream) -> None:
        self._inner = inner
        self.deployment = inner.deployment
        self.wire = inner.wire

    def ready(self) -> bool:
        return True

    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamReply:
        await self._inner.complete(endpoint, payload, headers)
        raise RuntimeError("adapter bug at 0xdeadbeef in /srv/forebay/secret_internals.py")

    async def open_stream(
        self, endpoint: Endpoint, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> UpstreamStream:
        await self._inner.open_stream(endpoint, payload, headers)
        raise RuntimeError("adapter bug at 0xdeadbeef in /srv/forebay/secret_internals.py")

    async def close(self) -> None:
        await self._inner.close()


def _explode(gw: Gateway, alias: str, deployment: str) -> None:
    for state in gw.services.traffic.pools[alias].states:
        if state.name == deployment:
            state.upstream = _Exploding(state.upstream)


@pytest.mark.parametrize("stream", [False, True])
def test_unexpected_error_answers_500_in_the_envelope_and_gives_everything_back(
    gw: Gateway, stream: bool
) -> None:
    _explode(gw, "m", "dep-m")
    resp = _post(gw, "hi", stream=stream)
    err = _envelope(resp, 500)
    assert err["type"] == "server_error" and err["code"] == "internal_error"
    assert resp.headers["x-request-id"] in err["message"]
    assert "0xdeadbeef" not in resp.text and "secret_internals" not in resp.text
    assert _settled(gw) == {}
    row = gw.row_for(resp.headers["x-request-id"])
    assert (row["status"], row["error_type"]) == (500, "internal_error")
    assert sum(1 for r in gw.ledger_rows() if r["request_id"] == row["request_id"]) == 1


def test_hedge_whose_primary_raises_unexpectedly_gives_both_slots_back(gw: Gateway) -> None:
    # The primary (300 ms) raises after the hedge (2 s) has started.
    _explode(gw, "raced", "bursts")
    resp = _post(gw, "hi", "raced", cls="realtime")
    _envelope(resp, 500)
    assert _settled(gw) == {}


def test_internal_error_on_any_route_uses_the_envelope(gw: Gateway) -> None:
    from starlette.routing import Route

    async def boom(request: object) -> None:
        raise RuntimeError("internal detail /srv/secret_internals.py")

    app = gw.server.server.config.app
    app.router.routes.append(Route("/admin/boom", boom))
    resp = httpx.get(f"{gw.url}/admin/boom")
    err = _envelope(resp, 500)
    assert err["code"] == "internal_error" and "secret_internals" not in resp.text
