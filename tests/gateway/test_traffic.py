"""Traffic classes, routing policies and resilience, against test upstreams on
loopback. Each test builds a gateway whose deployments point at the test
upstream with different behaviours (see tests/support/openai_server.py)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import httpx

from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support.openai_server import FakeUpstream
from tests.support.servers import ServerThread


def _deps(base_url: str, *specs: str, **extra: object) -> str:
    """`name=model[:key=value,...]` → deployment YAML lines."""
    out = ""
    for spec in specs:
        name, _, rest = spec.partition("=")
        model, _, opts = rest.partition(":")
        out += f"\n          - name: {name}\n            base_url: {base_url}"
        out += f"\n            model: {model}"
        for opt in filter(None, opts.split(",")):
            k, _, v = opt.partition("=")
            out += f"\n            {k}: {v}"
    return out


def _classes(**classes: str) -> str:
    return "classes: {" + ", ".join(f"{k}: {{{v}}}" for k, v in classes.items()) + "}"


def _gateway(
    make_gateway: GatewayFactory, upstream: Upstream, policy: str, *specs: str, head: str = ""
) -> Gateway:
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    resilience: {{eject_base_s: 0.5}}
    {head}
    models:
      m:
        routing: {{policy: {policy}}}
        deployments:{_deps(upstream.base_url, *specs)}
    """
    )


def _post(
    gw: Gateway,
    content: str = "hello",
    *,
    key: str | None = None,
    cls: str | None = None,
    **extra: object,
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key or gw.tenant_key}"}
    if cls:
        headers["x-forebay-class"] = cls
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=30)


def _served_by(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    match = re.match(r"[\w-]+: ([\w.-]+)", resp.headers["x-forebay-route"])
    assert match, resp.headers["x-forebay-route"]
    return match.group(1)


async def _concurrently(gw: Gateway, n: int, **kw: object) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as http:
        headers = {"authorization": f"Bearer {kw.pop('key', None) or gw.tenant_key}"}
        if "cls" in kw:
            headers["x-forebay-class"] = str(kw.pop("cls"))
        content = str(kw.pop("content", "hi"))
        body = {"model": "m", "messages": [{"role": "user", "content": content}], **kw}
        return await asyncio.gather(
            *(
                http.post(f"{gw.base_url}/chat/completions", json=body, headers=headers)
                for _ in range(n)
            )
        )


# -- classes -----------------------------------------------------------------


def test_class_header_is_checked_against_the_key(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "ordered", "a=echo")
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    made = httpx.post(
        f"{gw.url}/admin/keys",
        json={"tenant": "default", "classes": ["batch", "interactive"], "default_class": "batch"},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert _post(gw, key=key).status_code == 200
    assert _post(gw, key=key, cls="interactive").status_code == 200
    denied = _post(gw, key=key, cls="realtime")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "class_not_allowed"
    assert "batch, interactive" in denied.json()["error"]["message"]
    unknown = _post(gw, key=key, cls="turbo")
    assert unknown.status_code == 400 and "realtime" in unknown.json()["error"]["message"]
    bad = httpx.post(
        f"{gw.url}/admin/keys", json={"tenant": "default", "classes": ["vip"]}, headers=admin
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "classes"


# -- routing policies --------------------------------------------------------


def test_ordered_fails_over_before_the_first_byte(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "ordered", "broken=fail-500", "good=echo")
    resp = _post(gw, stream=True)
    assert _served_by(resp) == "good"
    assert "broken failed: HTTP 500" in resp.headers["x-forebay-route"]
    assert "data: [DONE]" in resp.text


def test_weighted_shares_follow_weights(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = _gateway(make_gateway, upstream, "weighted", "a=echo:weight=3", "b=echo:weight=1")
    served = Counter(_served_by(_post(gw)) for _ in range(40))
    assert served == {"a": 30, "b": 10}


def test_least_loaded_avoids_the_busy_deployment(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "least_loaded", "a=slow-300", "b=slow-300")

    async def run() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as http:
            headers = {"authorization": f"Bearer {gw.tenant_key}"}
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            url = f"{gw.base_url}/chat/completions"
            first = [
                asyncio.create_task(http.post(url, json=body, headers=headers)) for _ in range(3)
            ]
            await asyncio.sleep(0.1)
            # Three in flight: two on one deployment, one on the other; the next goes to the latter.
            resps = await asyncio.gather(*first, http.post(url, json=body, headers=headers))
            return [_served_by(r) for r in resps]

    names = asyncio.run(run())
    counts = Counter(names[:3])
    assert sorted(counts.values()) == [1, 2]
    assert names[3] == min(counts, key=lambda n: counts[n])


def test_cheapest_within_slo_skips_a_cheap_deployment_over_its_slo(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    head = _classes(
        interactive="priority: 1, ttft_slo_ms: 150, deadline_ms: 30000, max_queue_ms: 5000"
    )
    gw = _gateway(
        make_gateway,
        upstream,
        "cheapest_within_slo",
        "cheap=slow-250:price={input_per_million: 1}",
        "premium=echo:price={input_per_million: 10}",
        head=head,
    )
    # Until it has samples, the cheap one is presumed within SLO and takes the traffic...
    first = [_served_by(_post(gw)) for _ in range(20)]
    assert first == ["cheap"] * 20
    # ...its p95 (250 ms) now exceeds the 150 ms objective: the premium one is chosen.
    resp = _post(gw)
    assert _served_by(resp) == "premium"
    assert (
        resp.headers["x-forebay-route"]
        == "cheapest-within-slo: premium (cheap skipped: p95 over SLO)"
    )
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["route_reason"] == resp.headers["x-forebay-route"]


def test_prefix_affinity_keeps_a_prefix_on_one_deployment(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "prefix_affinity", "a=echo", "b=echo", "c=echo", "d=echo")

    def prompt(p: str, i: int) -> str:  # a long shared prefix (> prefix_chars), then a question
        return f"{p}: a long shared system prompt. " * 80 + f"question {i}"

    by_prefix = {
        p: {_served_by(_post(gw, prompt(p, i))) for i in range(5)}
        for p in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
    }
    assert all(len(names) == 1 for names in by_prefix.values()), by_prefix
    assert len(set().union(*by_prefix.values())) >= 2  # different prefixes spread out


def test_prefix_affinity_follows_a_responses_conversation_continued_by_id(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # A turn continued by previous_response_id is sent its whole stored
    # conversation: its prefix is that conversation's, so it goes where the
    # conversation's cache is, whatever its own short input says.
    gw = _gateway(make_gateway, upstream, "prefix_affinity", "a=echo", "b=echo", "c=echo", "d=echo")
    headers = {"authorization": f"Bearer {gw.tenant_key}"}

    def respond(**body: object) -> httpx.Response:
        resp = httpx.post(
            f"{gw.base_url}/responses", json={"model": "m", **body}, headers=headers, timeout=30
        )
        assert resp.status_code == 200, resp.text
        return resp

    for topic in ("alpha", "bravo", "charlie"):
        first = respond(input=f"{topic}: a long shared system prompt. " * 80)
        served = {_served_by(first)}
        previous = first.json()["id"]
        for i in range(4):
            turn = respond(input=f"follow-up {i} on {topic}", previous_response_id=previous)
            served.add(_served_by(turn))
            previous = turn.json()["id"]
        assert len(served) == 1, (topic, served)


def test_prefix_affinity_yields_under_imbalance(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "prefix_affinity", "a=slow-400", "b=slow-400")
    resps = asyncio.run(_concurrently(gw, 6, content="the same long prefix for everyone"))
    served = Counter(_served_by(r) for r in resps)
    # Bounded loads: each pick stays within ceil(1.5 x the mean), so both take a share.
    assert len(served) == 2 and max(served.values()) <= 5, served
    assert any("over load guard" in r.headers["x-forebay-route"] for r in resps)


# -- resilience ----------------------------------------------------------------


def test_retry_budget_caps_attempts_on_a_dead_upstream(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # 503 is transient, so worth retrying on the same deployment (a 500 is not:
    # the same answer would come back, see failures.py).
    gw = _gateway(make_gateway, upstream, "ordered", "dead=fail-503")
    resps = asyncio.run(_concurrently(gw, 60))
    assert all(r.status_code == 503 for r in resps)
    attempts = len(upstream.fake.seen)
    # Without a budget each request would be tried 3 times (180 attempts).
    assert 60 <= attempts <= 60 * 1.3, attempts
    reasons = [str(r["route_reason"]) for r in gw.wait_rows(60)]
    assert len(reasons) == 60
    # Every request that was not retried says why.
    assert sum("retry budget exhausted" in r for r in reasons) >= 60 - (attempts - 60)


def test_ejection_and_recovery(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = _gateway(make_gateway, upstream, "ordered", "flaky=fail-503", "steady=echo")
    for _ in range(5):  # five consecutive failures on `flaky` (each failed over to `steady`)
        assert _served_by(_post(gw)) == "steady"
    resp = _post(gw)
    assert "flaky skipped: ejected" in resp.headers["x-forebay-route"]
    seen = len(upstream.fake.seen)
    _post(gw)
    assert len(upstream.fake.seen) == seen + 1  # the ejected deployment is not even tried
    time.sleep(0.6)  # eject_base_s: 0.5 for the first ejection
    _post(gw)
    assert upstream.fake.seen[-2].body["model"] == "fail-503"  # tried again after ejection
    metrics = httpx.get(f"{gw.url}/metrics", headers=_operator(gw)).text
    assert 'forebay_ejections_total{deployment="flaky"} 1.0' in metrics


def test_the_last_healthy_deployment_is_never_ejected(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "ordered", "only=fail-503")
    for _ in range(8):
        resp = _post(gw)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "upstream_unavailable"


def test_upstream_429_retry_after_is_honoured(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "ordered", "limited=fail-429", "spare=echo")
    assert _served_by(_post(gw)) == "spare"
    seen = len(upstream.fake.seen)
    resp = _post(gw)  # `limited` said Retry-After: 7 and is skipped meanwhile
    assert "limited skipped: cooling down after 429" in resp.headers["x-forebay-route"]
    assert len(upstream.fake.seen) == seen + 1


def test_hedging_sends_a_second_try_after_p95(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    head = _classes(
        realtime="priority: 0, ttft_slo_ms: 100, deadline_ms: 9000, max_queue_ms: 900, hedge: true",
        interactive="priority: 1, ttft_slo_ms: 2000, deadline_ms: 30000, max_queue_ms: 5000",
    )
    gw = _gateway(make_gateway, upstream, "ordered", "slow=slow-1500", "fast=echo", head=head)
    resp = _post(gw, cls="realtime")
    assert _served_by(resp) == "fast"  # the slow try (1.5 s) lost the race
    assert "hedged after 100 ms: slow lost" in resp.headers["x-forebay-route"]
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["deployment"] == "fast" and "hedged" in str(row["route_reason"])


# -- admission -----------------------------------------------------------------


def test_realtime_goes_first_and_tenants_share_fairly(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(
        make_gateway,
        upstream,
        "ordered",
        "one=slow-100:max_concurrency=1,adaptive_concurrency=false",
    )
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    httpx.post(f"{gw.url}/admin/tenants", json={"name": "small"}, headers=admin)
    small = httpx.post(f"{gw.url}/admin/keys", json={"tenant": "small"}, headers=admin).json()[
        "key"
    ]

    async def run() -> tuple[list[float], list[float], float]:
        async with httpx.AsyncClient(timeout=60) as http:
            url = f"{gw.base_url}/chat/completions"
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}

            async def one(key: str, cls: str) -> float:
                resp = await http.post(
                    url,
                    json=body,
                    headers={"authorization": f"Bearer {key}", "x-forebay-class": cls},
                )
                assert resp.status_code == 200, resp.text
                return time.monotonic()

            t0 = time.monotonic()
            flood = [asyncio.create_task(one(gw.tenant_key, "batch")) for _ in range(12)]
            await asyncio.sleep(0.25)
            trickle = [asyncio.create_task(one(small, "batch")) for _ in range(2)]
            realtime = asyncio.create_task(one(small, "realtime"))
            done_flood = await asyncio.gather(*flood)
            done_trickle = await asyncio.gather(*trickle)
            return (
                [t - t0 for t in done_flood],
                [t - t0 for t in done_trickle],
                (await realtime) - t0,
            )

    flood, trickle, realtime = asyncio.run(run())
    # One slot, 100 ms each: the realtime request jumps the whole batch queue...
    assert realtime < sorted(flood)[4]
    # ...and the small tenant's two batch requests are not stuck behind the flood.
    assert max(trickle) < sorted(flood)[8]


def test_deadline_aware_shedding(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    head = _classes(
        interactive="priority: 1, ttft_slo_ms: 1000, deadline_ms: 10000, max_queue_ms: 300"
    )
    gw = _gateway(
        make_gateway,
        upstream,
        "ordered",
        "one=slow-200:max_concurrency=1,adaptive_concurrency=false",
        head=head,
    )
    resps = asyncio.run(_concurrently(gw, 8))
    codes = Counter(r.status_code for r in resps)
    assert codes[200] >= 2 and codes[503] >= 3, codes
    shed = next(r for r in resps if r.status_code == 503)
    assert shed.json()["error"]["code"] == "overloaded" and int(shed.headers["retry-after"]) >= 1
    metrics = httpx.get(f"{gw.url}/metrics", headers=_operator(gw)).text
    assert 'forebay_shed_requests_total{alias="m",traffic_class="interactive"}' in metrics


def test_a_stream_that_goes_idle_is_ended_with_an_error_event(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = _gateway(make_gateway, upstream, "ordered", "dripping=drip-300:timeout_s=0.1")
    resp = _post(gw, stream=True)
    assert resp.status_code == 200  # the stream had started
    events = [line for line in resp.text.splitlines() if line.startswith("data: ")]
    assert '"w0"' in events[0]
    assert "upstream_stream_failed" in events[-2] and events[-1] == "data: [DONE]"
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["status"] == 504 and row["error_type"] == "stream_timeout"
    assert row["completion_tokens"] == 1 and row["tokens_estimated"] == 1


def test_least_loaded_reads_the_upstreams_own_queue(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """A vLLM-style /metrics reporting a long queue steers traffic away."""
    busy = FakeUpstream(reported_load=12)
    upstream.fake.reported_load = 0
    with ServerThread(busy.app()) as busy_server:
        gw = make_gateway(
            f"""
        models:
          m:
            routing: {{policy: least_loaded}}
            deployments:
              - {{name: idle, base_url: "{upstream.base_url}", model: echo}}
              - {{name: busy, base_url: "{busy_server.url}/v1", model: echo}}
        """
        )
        time.sleep(1.5)  # the poller reads /metrics once a second
        served = Counter(_served_by(_post(gw)) for _ in range(6))
        assert served == {"idle": 6}
        busy.reported_load = 0
        upstream.fake.reported_load = 30
        time.sleep(1.5)
        assert Counter(_served_by(_post(gw)) for _ in range(6)) == {"busy": 6}


def _operator(gw: Gateway) -> dict[str, str]:
    return {"authorization": f"Bearer {gw.admin_key}"}
