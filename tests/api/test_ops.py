"""Probes and Prometheus metrics."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory, Upstream, echo_config


def test_probes_and_metrics_by_alias_deployment_and_tenant(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = make_gateway(echo_config(upstream.base_url))
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
    operator = {"authorization": f"Bearer {gw.admin_key}"}
    ready = httpx.get(f"{gw.url}/readyz", headers=operator)
    echo = ready.json()["aliases"]["echo"]
    assert ready.status_code == 200 and echo["deployments"]["fake-echo"]["state"] == "ready"

    auth = {"authorization": f"Bearer {gw.tenant_key}"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "a b c"}]}
    for stream in (False, True):
        sent = httpx.post(
            f"{gw.base_url}/chat/completions", json={**body, "stream": stream}, headers=auth
        )
        assert sent.status_code == 200
    httpx.post(f"{gw.base_url}/chat/completions", json={**body, "model": "nope"}, headers=auth)

    text = httpx.get(f"{gw.url}/metrics", headers=operator).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    tenant = next(
        dict(labels)["tenant"] for (name, labels) in samples if name == "forebay_requests_total"
    )
    labels = (("alias", "echo"), ("deployment", "fake-echo"), ("tenant", tenant))

    def value(name: str, extra: tuple[tuple[str, str], ...] = ()) -> float:
        return samples[(name, tuple(sorted(labels + extra)))]

    ok = (("code", "200"), ("endpoint", "chat/completions"))
    assert value("forebay_requests_total", ok) == 2
    assert value("forebay_tokens_total", (("direction", "completion"),)) == 6
    assert value("forebay_request_duration_seconds_count") == 2
    # Time to first token is observed for streams only.
    assert value("forebay_time_to_first_token_seconds_count") == 1
    assert value("forebay_cost_usd_total") > 0
    errors = [
        (dict(lb)["type"], v) for (name, lb), v in samples.items() if name == "forebay_errors_total"
    ]
    assert errors == [("model_not_found", 1.0)]


METRICS_TOKEN = "metrics-token-" + "0123456789abcdef"


def _operator_config(base_url: str, server: str) -> str:
    return (
        echo_config(base_url)
        + f"""
    server:
      {server}
    """
    )


def test_metrics_and_readiness_detail_are_for_operators_only(
    make_gateway: GatewayFactory, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREBAY_TEST_METRICS_TOKEN", METRICS_TOKEN)
    gw = make_gateway(
        _operator_config(upstream.base_url, "metrics_token: ${FOREBAY_TEST_METRICS_TOKEN}")
    )

    def get(path: str, token: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{gw.url}{path}", headers=headers)

    for token, status, code in [
        (None, 401, "invalid_api_key"),
        ("sk-fb-not-a-key", 401, "invalid_api_key"),
        (gw.tenant_key, 403, "operator_required"),
    ]:
        refused = get("/metrics", token)
        assert refused.status_code == status
        assert refused.json()["error"]["code"] == code
        assert "forebay_" not in refused.text
    for token in (METRICS_TOKEN, gw.admin_key):
        scraped = get("/metrics", token)
        assert scraped.status_code == 200 and "forebay_ledger_queue_depth" in scraped.text

    # /readyz: the status code for anyone (load balancers), the detail for operators.
    for token in (None, gw.tenant_key, "sk-fb-not-a-key"):
        public = get("/readyz", token)
        assert public.status_code == 200 and public.json() == {"status": "ready"}
        assert "fake-echo" not in public.text and "echo" not in public.text
    detail = get("/readyz", METRICS_TOKEN).json()
    assert detail["status"] == "ready" and detail["cannot_serve"] == []
    assert set(detail["aliases"]) == {"echo", "nousage", "embed"}


def test_metrics_listener_serves_only_metrics_without_a_token(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = make_gateway(_operator_config(upstream.base_url, "metrics_listen: 127.0.0.1:0"))
    assert gw.metrics_port is not None and gw.metrics_port != gw.server.port
    local = f"http://127.0.0.1:{gw.metrics_port}"
    scraped = httpx.get(f"{local}/metrics")
    assert scraped.status_code == 200 and "forebay_client_connections" in scraped.text
    # Nothing else is reachable there, and the API port still wants a token.
    assert httpx.get(f"{local}/readyz").status_code == 404
    assert httpx.post(f"{local}/v1/chat/completions", json={}).status_code == 404
    assert httpx.get(f"{gw.url}/metrics").status_code == 401
