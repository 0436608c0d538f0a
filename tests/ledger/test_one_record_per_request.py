"""Every request, whatever its fate, leaves exactly one ledger record, with
cost and energy computed from the deployment's prices."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    extra = f"""
      broken:
        deployments:
          - name: fake-broken
            base_url: {upstream.base_url}
            model: break-stream
      drip:
        deployments:
          - name: fake-drip
            base_url: {upstream.base_url}
            model: drip-50
    """
    return make_gateway(echo_config(upstream.base_url) + extra)


def _rows_for(
    gw: Gateway, request_ids: list[str], timeout: float = 10
) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = gw.ledger_rows()
        by_id = {str(r["request_id"]): r for r in rows}
        if all(rid in by_id for rid in request_ids) or time.monotonic() > deadline:
            assert len(by_id) == len(rows), "a request id was recorded twice"
            return by_id
        time.sleep(0.05)


def test_every_outcome_is_recorded_once(gw: Gateway) -> None:
    auth = {"authorization": f"Bearer {gw.tenant_key}"}
    chat = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}
    long = {"role": "user", "content": "one two three four five"}
    ids: dict[str, str] = {}
    with httpx.Client(base_url=gw.base_url, timeout=10) as http:
        cases = {
            "ok": http.post("/chat/completions", json=chat, headers=auth),
            "stream": http.post("/chat/completions", json={**chat, "stream": True}, headers=auth),
            "unknown": http.post("/chat/completions", json={**chat, "model": "x"}, headers=auth),
            "bad_json": http.post("/chat/completions", content=b"{", headers=auth),
            "no_usage": http.post(
                "/chat/completions", json={**chat, "model": "nousage"}, headers=auth
            ),
            "broken": http.post(  # the test upstream drops the stream after three words
                "/chat/completions",
                json={**chat, "model": "broken", "stream": True, "messages": [long]},
                headers=auth,
            ),
        }
        for name, resp in cases.items():
            ids[name] = resp.headers["x-request-id"]
        # Failed authentication is counted in metrics, never a row (issue 8, item 7).
        assert http.post("/chat/completions", json=chat).status_code == 401
        # A client that walks away in the middle of a stream.
        with http.stream(
            "POST",
            "/chat/completions",
            json={**chat, "model": "drip", "stream": True},
            headers=auth,
        ) as resp:
            ids["aborted"] = resp.headers["x-request-id"]
            next(resp.iter_raw())
    assert len(set(ids.values())) == len(ids)
    rows = _rows_for(gw, list(ids.values()))
    assert set(ids.values()) <= set(rows), "missing ledger records"
    assert len(rows) == len(ids), "extra ledger records"
    got = {name: rows[rid] for name, rid in ids.items()}

    assert got["ok"]["status"] == 200 and got["ok"]["tokens_estimated"] == 0
    # The test upstream counts words + 3 prompt tokens and one token per word answered.
    assert (got["ok"]["prompt_tokens"], got["ok"]["completion_tokens"]) == (6, 3)
    # Price: 1 $/M input, 2 $/M output; energy 0.5 J/in, 2 J/out token.
    assert got["ok"]["cost_usd"] == pytest.approx((6 * 1.0 + 3 * 2.0) / 1e6)
    assert got["ok"]["energy_wh"] == pytest.approx((6 * 0.5 + 3 * 2.0) / 3600)
    assert got["ok"]["tenant_id"] and got["ok"]["key_id"]
    assert got["ok"]["route_reason"] == "ordered: fake-echo"
    assert got["ok"]["config_revision"] == gw.services.settings.revision
    assert got["ok"]["traffic_class"] == "interactive"  # the key's default class
    assert float(str(got["ok"]["latency_ms"])) > 0

    assert got["stream"]["stream"] == 1 and got["stream"]["completion_tokens"] == 3
    assert got["stream"]["ttft_ms"] is not None

    assert got["unknown"]["status"] == 404
    assert got["bad_json"]["status"] == 400
    assert got["no_usage"]["tokens_estimated"] == 1 and got["no_usage"]["status"] == 200

    assert got["broken"]["status"] == 502 and got["broken"]["completion_tokens"] > 0
    assert got["aborted"]["status"] == 499 and got["aborted"]["error_type"] == "client_disconnected"


def test_mid_stream_failure_ends_the_stream_cleanly_with_an_error_event(
    sdk: Callable[..., openai.OpenAI], gw: Gateway
) -> None:
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)
    stream = client.chat.completions.create(
        model="broken", messages=[{"role": "user", "content": "a b c d e"}], stream=True
    )
    got: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got)  # the partial answer reached the client first
    assert "incomplete" in str(raised.value)


def test_admin_usage_sums_the_ledger(sdk: Callable[..., openai.OpenAI], gw: Gateway) -> None:
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b"}])
    assert len(gw.wait_rows(3)) == 3
    resp = httpx.get(
        f"{gw.url}/admin/usage",
        params={"since": "1h", "by": "model"},
        headers={"authorization": f"Bearer {gw.admin_key}"},
    )
    assert resp.status_code == 200, resp.text
    (echo,) = [g for g in resp.json()["data"] if g["group"] == "echo"]
    assert echo["requests"] == 3
    assert echo["prompt_tokens"] == 3 * 5 and echo["completion_tokens"] == 3 * 2
