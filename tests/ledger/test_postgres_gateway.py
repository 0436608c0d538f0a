"""A gateway whose ledger is PostgreSQL: every request leaves one row there,
the rollups follow, and the admin usage API answers from them."""

from __future__ import annotations

import time

import httpx
import openai
import sqlalchemy as sa

from forebay.ledger.query import GroupBy, summarize, summarize_raw
from tests.conftest import GatewayFactory, Upstream, echo_config


def test_a_gateway_writes_its_ledger_to_postgres(
    make_gateway: GatewayFactory, upstream: Upstream, postgres_url: str
) -> None:
    # The plain libpq spelling is accepted and means the psycopg driver.
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    gw = make_gateway(f'\n    database: {{url: "{url}"}}' + echo_config(upstream.base_url))
    assert gw.services.engine.dialect.name == "postgresql"
    ids = []
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as client:
        for i in range(5):
            resp = client.chat.completions.with_raw_response.create(
                model="echo", messages=[{"role": "user", "content": "a b " * (i + 1)}]
            )
            ids.append(resp.headers["x-request-id"])
    bad = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "echo", "messages": []},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
    )
    assert bad.status_code == 400
    ids.append(bad.headers["x-request-id"])

    engine = sa.create_engine(postgres_url)
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT request_id, status FROM usage_events")).all()
            daily = conn.execute(sa.text("SELECT SUM(requests) FROM usage_daily")).scalar()
        if len(rows) >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sorted(r.request_id for r in rows) == sorted(ids)
    assert daily == len(ids)
    groupings: tuple[GroupBy, ...] = ("tenant", "model", "deployment", "key")
    for by in groupings:
        got = summarize(gw.services.engine, since=time.time() - 7200, by=by)
        want = summarize_raw(gw.services.engine, since=time.time() - 7200, by=by)
        assert [(r.group, r.requests, r.prompt_tokens) for r in got] == [
            (r.group, r.requests, r.prompt_tokens) for r in want
        ]
    engine.dispose()

    usage = httpx.get(
        f"{gw.url}/admin/usage",
        params={"since": "1h", "by": "model"},
        headers={"authorization": f"Bearer {gw.admin_key}"},
    )
    assert usage.status_code == 200, usage.text
    (echo,) = [g for g in usage.json()["data"] if g["group"] == "echo"]
    assert echo["requests"] == 5
    assert echo["completion_tokens"] == sum(2 * (i + 1) for i in range(5))


def test_a_long_route_reason_costs_no_row_on_postgres(
    make_gateway: GatewayFactory, upstream: Upstream, postgres_url: str
) -> None:
    """Issue 8, item 3: five deployments with realistic names cooling down
    after a 429 made a 420-character route reason, and PostgreSQL refused the
    whole batch (VARCHAR(300)). Now the reason is TEXT and every row is kept."""
    names = [f"gpu-pool-eu-west-{i}-llama-3-70b-instruct-fp8-tp4" for i in range(8)]
    deployments = "".join(
        f"""
          - name: {name}
            base_url: {upstream.base_url}
            model: fail-429"""
        for name in names
    )
    gw = make_gateway(
        f"""
    database: {{url: "{postgres_url}"}}
    ledger: {{flush_interval_s: 0.05, batch_size: 10000}}
    resilience: {{max_attempts: 10, retry_budget_min: 100}}
    models:
      echo:
        deployments:{deployments}
          - name: gpu-pool-us-east-9-llama-3-70b-instruct-fp8-tp4
            base_url: {upstream.base_url}
            model: echo
    """
    )
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "a b c"}]}
    ids, reasons = [], []
    with httpx.Client(base_url=gw.base_url, headers=headers, timeout=30) as http:
        for _ in range(20):
            resp = http.post("/chat/completions", json=body)
            assert resp.status_code == 200, resp.text
            ids.append(resp.headers["x-request-id"])
            reasons.append(resp.headers["x-forebay-route"])
    assert max(len(r) for r in reasons) > 300, reasons[-1]

    engine = sa.create_engine(postgres_url)
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as conn:
            rows = dict(
                conn.execute(sa.text("SELECT request_id, route_reason FROM usage_events")).all()
            )
        if len(rows) >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    engine.dispose()
    assert sorted(rows) == sorted(ids), "every row written"
    assert [rows[i] for i in ids] == reasons  # whole, as the client was told
    assert gw.services.ledger.rejected == gw.services.ledger.dropped == 0
