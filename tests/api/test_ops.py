"""Probes and Prometheus metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory, Upstream, echo_config


def test_probes_and_metrics_by_alias_deployment_and_tenant(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = make_gateway(echo_config(upstream.base_url))
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 200 and ready.json()["deployments"]["fake-echo"] is True

    auth = {"authorization": f"Bearer {gw.tenant_key}"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "a b c"}]}
    for stream in (False, True):
        sent = httpx.post(
            f"{gw.base_url}/chat/completions", json={**body, "stream": stream}, headers=auth
        )
        assert sent.status_code == 200
    httpx.post(f"{gw.base_url}/chat/completions", json={**body, "model": "nope"}, headers=auth)

    text = httpx.get(f"{gw.url}/metrics").text
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
