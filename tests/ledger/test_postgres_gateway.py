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
    bad = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "echo", "messages": []})
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
