"""Cached and reasoning tokens through the real gateway: recorded in the ledger,
priced with their own prices, settled against budgets at that price, shown by
`forebay usage` and the admin usage API.

The test upstream's `details-<c>-<r>` model reports, beside echo's own counts,
<c> more prompt tokens all read from its prompt cache and <r> more completion
tokens all reasoning, as OpenAI does (prompt_tokens_details.cached_tokens,
completion_tokens_details.reasoning_tokens)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from forebay.cli.main import app
from forebay.gateway.metering import usage_counts
from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config

# "a b c" is 3 words: echo counts 3 + 3 prompt tokens and answers 3 completion tokens.
PROMPT = "a b c"
CACHED, REASONING = 1000, 200
PROMPT_TOKENS = 6 + CACHED
COMPLETION_TOKENS = 3 + REASONING

# Per million tokens.
INPUT, CACHE_READ, OUTPUT = 2.0, 0.5, 8.0
# By hand: 6 uncached prompt tokens at $2/M, 1,000 cached at $0.50/M, and 203
# completion tokens (200 of them reasoning) at $8/M.
HAND_COST = (6 * 2.0 + 1000 * 0.5 + 203 * 8.0) / 1e6  # $0.002136
# The same request where the cache has no price of its own: all 1,006 at $2/M.
HAND_COST_UNPRICED_CACHE = (1006 * 2.0 + 203 * 8.0) / 1e6  # $0.003636


def _config(base_url: str) -> str:
    return (
        echo_config(base_url)
        + f"""
      thinker:
        deployments:
          - name: fake-thinker
            base_url: {base_url}
            model: details-{CACHED}-{REASONING}
            price:
              input_per_million: {INPUT}
              cache_read_per_million: {CACHE_READ}
              output_per_million: {OUTPUT}
      plain-price:
        deployments:
          - name: fake-plain-price
            base_url: {base_url}
            model: details-{CACHED}-{REASONING}
            price: {{input_per_million: {INPUT}, output_per_million: {OUTPUT}}}
      cachey:
        deployments:
          - name: fake-cachey
            base_url: {base_url}
            model: details-20-10
            price:
              input_per_million: 1000000
              cache_read_per_million: 100000
              cache_write_per_million: 2000000
              output_per_million: 2000000
    """
    )


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(_config(upstream.base_url))


def _client(gw: Gateway, sdk: Callable[..., openai.OpenAI]) -> openai.OpenAI:
    return sdk(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)


def _parts(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        row[c]
        for c in (
            "prompt_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "completion_tokens",
            "reasoning_tokens",
            "protocol",
            "tokens_estimated",
        )
    )


WANT = (PROMPT_TOKENS, CACHED, 0, COMPLETION_TOKENS, REASONING, "openai_chat", False)


def test_a_chat_request_with_cached_and_reasoning_tokens_costs_what_a_hand_computes(
    gw: Gateway, sdk: Callable[..., openai.OpenAI]
) -> None:
    client = _client(gw, sdk)
    raw = client.chat.completions.with_raw_response.create(
        model="thinker", messages=[{"role": "user", "content": PROMPT}]
    )
    reply = raw.parse()
    assert reply.usage is not None  # relayed untouched, details included
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == CACHED
    row = gw.row_for(raw.headers["x-request-id"])
    assert _parts(row) == WANT
    assert row["cost_usd"] == pytest.approx(HAND_COST, rel=1e-12)


def test_a_streamed_request_is_counted_from_its_usage_chunk_the_same_way(
    gw: Gateway, sdk: Callable[..., openai.OpenAI]
) -> None:
    client = _client(gw, sdk)
    # The client does not ask for usage: Forebay asks the upstream for it, reads
    # the details from that chunk and drops it on the way back.
    with client.chat.completions.with_streaming_response.create(
        model="thinker", messages=[{"role": "user", "content": PROMPT}], stream=True
    ) as resp:
        request_id = resp.headers["x-request-id"]
        chunks = list(resp.parse())
    assert chunks and all(c.usage is None for c in chunks)
    row = gw.row_for(request_id)
    assert _parts(row) == WANT
    assert row["cost_usd"] == pytest.approx(HAND_COST, rel=1e-12)

    with client.chat.completions.with_streaming_response.create(
        model="thinker",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        request_id = resp.headers["x-request-id"]
        usage = [c.usage for c in resp.parse() if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens_details is not None
    assert usage[0].completion_tokens_details.reasoning_tokens == REASONING
    assert gw.row_for(request_id)["cost_usd"] == pytest.approx(HAND_COST, rel=1e-12)


def test_completions_report_the_same_details(
    gw: Gateway, sdk: Callable[..., openai.OpenAI]
) -> None:
    client = _client(gw, sdk)
    raw = client.completions.with_raw_response.create(model="thinker", prompt=PROMPT)
    row = gw.row_for(raw.headers["x-request-id"])
    assert _parts(row) == WANT
    assert row["cost_usd"] == pytest.approx(HAND_COST, rel=1e-12)


def test_cached_tokens_without_a_price_of_their_own_cost_as_input(
    gw: Gateway, sdk: Callable[..., openai.OpenAI]
) -> None:
    client = _client(gw, sdk)
    raw = client.chat.completions.with_raw_response.create(
        model="plain-price", messages=[{"role": "user", "content": PROMPT}]
    )
    row = gw.row_for(raw.headers["x-request-id"])
    assert row["cache_read_tokens"] == CACHED  # still recorded
    assert row["cost_usd"] == pytest.approx(HAND_COST_UNPRICED_CACHE, rel=1e-12)


def _chat(gw: Gateway, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=10)


def test_budgets_reserve_the_dearest_input_price_and_settle_at_the_real_one(
    gw: Gateway, admin: httpx.Client
) -> None:
    """`cachey` costs $1 per uncached prompt token, $0.10 per cached one, $2 per
    token written to the cache or generated. Its upstream counts 26 prompt
    tokens (20 cached) and 13 completion tokens (10 reasoning): by hand, 6 x $1 +
    20 x $0.10 + 13 x $2 = $34. A request reserves, per prompt token, the dearest
    of the three input prices (it could all be written to the cache): 29 prompt
    tokens (5 bytes + chat template) x $2 + 5 (max_tokens) x $2 = $68."""
    policy = {"usd_per_day": {"hard": 60}, "tokens_per_day": {"hard": 1000}}
    assert admin.put("/admin/limits/tenant/default", json=policy).status_code == 200
    refused = _chat(gw, "cachey", max_tokens=5)  # $68 could pass a $60 budget: refused
    assert refused.status_code == 429, refused.text
    assert "needs up to $68 more" in refused.json()["error"]["message"]

    policy = {"usd_per_day": {"hard": 100}, "tokens_per_day": {"hard": 1000}}
    assert admin.put("/admin/limits/tenant/default", json=policy).status_code == 200
    ok = _chat(gw, "cachey", max_tokens=5)
    assert ok.status_code == 200, ok.text
    assert gw.row_for(ok.headers["x-request-id"])["cost_usd"] == pytest.approx(34.0)
    usage = admin.get("/admin/limits/tenant/default").json()["usage"]
    assert usage["usd_per_day"]["used"] == pytest.approx(34.0)  # settled at the real cost
    # Tokens: all 26 prompt tokens (cached ones too) and 13 completion tokens.
    assert usage["tokens_per_day"]["used"] == 26 + 13
    # $34 spent: another $68 reservation passes $100, so it is refused.
    assert _chat(gw, "cachey", max_tokens=5).status_code == 429


def test_usage_shows_cached_and_reasoning_tokens_and_groups_by_protocol(
    gw: Gateway, sdk: Callable[..., openai.OpenAI], admin: httpx.Client
) -> None:
    client = _client(gw, sdk)
    for _ in range(2):
        client.chat.completions.create(
            model="thinker", messages=[{"role": "user", "content": PROMPT}]
        )
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": PROMPT}])
    gw.wait_rows(3)

    body = admin.get("/admin/usage", params={"since": "1h", "by": "model"}).json()
    thinker = next(r for r in body["data"] if r["group"] == "thinker")
    assert (thinker["cache_read_tokens"], thinker["reasoning_tokens"]) == (2 * CACHED, 400)
    assert thinker["cache_write_tokens"] == 0
    assert thinker["cost_usd"] == pytest.approx(2 * HAND_COST)
    by_protocol = admin.get("/admin/usage", params={"by": "protocol"}).json()["data"]
    assert [(r["group"], r["requests"]) for r in by_protocol] == [("openai_chat", 3)]
    assert admin.get("/admin/usage", params={"by": "colour"}).status_code == 400

    args = ["--data-dir", str(gw.data_dir), "--since", "1h"]
    runner = CliRunner()
    as_json = runner.invoke(app, ["usage", "--json", "--by", "model", *args])
    assert as_json.exit_code == 0, as_json.output
    rows = {r["group"]: r for r in json.loads(as_json.stdout)}
    assert rows["thinker"]["cache_read_tokens"] == 2 * CACHED
    assert rows["thinker"]["reasoning_tokens"] == 2 * REASONING
    assert rows["echo"]["cache_read_tokens"] == rows["echo"]["reasoning_tokens"] == 0

    table = runner.invoke(app, ["usage", "--by", "protocol", *args], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if "protocol" in line)
    for column in ("prompt tok", "cached", "cache write", "completion tok", "reasoning"):
        assert column in header
    line = next(line for line in table.stdout.splitlines() if "openai_chat" in line)
    assert f"{2 * CACHED:,}" in line and f"{2 * REASONING:,}" in line
    bad = runner.invoke(app, ["usage", "--by", "colour", *args])
    assert bad.exit_code == 2 and "protocol" in bad.output


@pytest.mark.parametrize(
    ("usage", "want"),
    [
        # Plain counts, no details (most self-hosted servers).
        ({"prompt_tokens": 10, "completion_tokens": 4}, (10, 4, 0, 0)),
        # Details as null, or empty.
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 4,
                "prompt_tokens_details": None,
                "completion_tokens_details": {},
            },
            (10, 4, 0, 0),
        ),
        # A part larger than its total is fitted to it: no negative uncached tokens.
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 99},
                "completion_tokens_details": {"reasoning_tokens": 50},
            },
            (10, 4, 10, 4),
        ),
        # Garbage parts count as none.
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": "7"},
                "completion_tokens_details": [3],
            },
            (10, 4, 0, 0),
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": -5},
                "completion_tokens_details": "x",
            },
            (10, 4, 0, 0),
        ),
    ],
)
def test_usage_details_from_any_upstream_are_fitted(
    usage: dict[str, Any], want: tuple[int, int, int, int]
) -> None:
    counts = usage_counts(usage)
    assert counts is not None
    got = (
        counts.input_tokens,
        counts.output_tokens,
        counts.cache_read_tokens,
        counts.reasoning_tokens,
    )
    assert got == want
