"""Rate limits and budgets in a single process (in-process counters)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from forebay.config.settings import PartBounds
from forebay.gateway.metering import prompt_token_bound
from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config
from tests.support.openai_server import MEDIA_PROMPT_TOKENS

# What the `vision` deployment reserves per image: above the 1,000 the test upstream charges.
IMAGE_BOUND = 1500


def _config(base_url: str) -> str:
    # `pricey` costs $1 per prompt token and $2 per completion token.
    return (
        echo_config(base_url)
        + f"""
      pricey:
        deployments:
          - name: fake-pricey
            base_url: {base_url}
            model: echo
            price: {{input_per_million: 1000000, output_per_million: 2000000}}
      slow:
        deployments:
          - name: fake-slow
            base_url: {base_url}
            model: slow-400
      silent:  # answers without a usage block: the ledger estimates the prompt
        deployments:
          - name: fake-silent
            base_url: {base_url}
            model: no-usage
      vision:
        deployments:
          - name: fake-vision
            base_url: {base_url}
            model: vision
            price: {{input_per_million: 10, output_per_million: 10}}
            reserve: {{image_tokens: {IMAGE_BOUND}}}
    """
    )


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(_config(upstream.base_url))


def _chat(
    gw: Gateway, model: str = "echo", key: str | None = None, **extra: object
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "a b c"}], **extra}
    headers = {"authorization": f"Bearer {key or gw.tenant_key}"}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=10)


def _set(admin: httpx.Client, scope: str, ref: str, policy: dict[str, object]) -> None:
    resp = admin.put(f"/admin/limits/{scope}/{ref}", json=policy)
    assert resp.status_code == 200, resp.text


def test_rpm_refuses_with_openai_headers(gw: Gateway, admin: httpx.Client) -> None:
    _set(admin, "tenant", "default", {"rpm": 3})
    ok = [_chat(gw) for _ in range(3)]
    assert [r.status_code for r in ok] == [200] * 3
    assert ok[0].headers["x-ratelimit-limit-requests"] == "3"
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["2", "1", "0"]
    refused = _chat(gw)
    assert refused.status_code == 429
    err = refused.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    assert "tenant 'default'" in err["message"] and "limit 3" in err["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tpm_reserves_max_tokens_then_settles_to_real_use(gw: Gateway, admin: httpx.Client) -> None:
    _set(admin, "tenant", "default", {"tpm": 100})
    # Reserved: ~1 prompt token (estimate) + 60; the echo uses 6 + 3 = 9 in fact.
    first = _chat(gw, max_tokens=60)
    assert first.status_code == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 40
    # Settled to 9 used, so another 60-token reservation fits again...
    assert _chat(gw, max_tokens=60).status_code == 200
    # ...but not one that could exceed the minute's 100 tokens.
    refused = _chat(gw, max_tokens=95)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"


def test_concurrency_limit(gw: Gateway, admin: httpx.Client) -> None:
    _set(admin, "tenant", "default", {"concurrent": 1})

    async def both() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as http:
            body = {"model": "slow", "messages": [{"role": "user", "content": "x"}]}
            headers = {"authorization": f"Bearer {gw.tenant_key}"}
            url = f"{gw.base_url}/chat/completions"
            first = asyncio.create_task(http.post(url, json=body, headers=headers))
            await asyncio.sleep(0.15)
            second = await http.post(url, json=body, headers=headers)
            return [(await first).status_code, second.status_code]

    assert asyncio.run(both()) == [200, 429]
    assert _chat(gw, "slow").status_code == 200  # the slot was released


def test_dollar_budget_hard_and_soft(gw: Gateway, admin: httpx.Client) -> None:
    _set(admin, "tenant", "default", {"usd_per_day": {"soft": 40, "hard": 80}})
    # A `pricey` request reserves an upper bound, $39 (29 prompt tokens: 5 bytes + chat
    # template; 5 completion tokens), and settles to what it used: $12 (6 + 3 tokens).
    first = _chat(gw, "pricey", max_tokens=5)
    assert first.status_code == 200 and "x-forebay-budget-warning" not in first.headers
    second = _chat(gw, "pricey", max_tokens=5)  # $12 spent + $39 reserved: past soft $40
    assert second.status_code == 200
    assert "usd_per_day" in second.headers["x-forebay-budget-warning"]
    assert [_chat(gw, "pricey", max_tokens=5).status_code for _ in range(2)] == [200, 200]
    refused = _chat(gw, "pricey", max_tokens=5)  # $48 + $39 > $80
    assert refused.status_code == 429
    err = refused.json()["error"]
    assert err["type"] == "insufficient_quota" and err["code"] == "budget_exceeded"
    assert "daily budget of $80.00" in err["message"] and "resets at" in err["message"]
    assert int(refused.headers["retry-after"]) <= 86400
    # A cheap model still fits, because its reservation is small.
    assert _chat(gw, "echo", max_tokens=5).status_code == 200

    usage = admin.get("/admin/limits/tenant/default").json()["usage"]["usd_per_day"]
    assert usage["used"] == pytest.approx(48 + (6 * 1 + 3 * 2) / 1e6)
    assert usage["limit"] == 80 and usage["soft"] == 40


def test_missing_max_tokens_is_capped_to_the_reservation(
    gw: Gateway, admin: httpx.Client, upstream: Upstream
) -> None:
    assert _chat(gw).status_code == 200
    assert "max_tokens" not in upstream.fake.seen[-1].body  # no limits: the body is untouched
    _set(admin, "tenant", "default", {"tpm": 100_000})
    assert _chat(gw).status_code == 200
    assert upstream.fake.seen[-1].body["max_tokens"] == 1024  # limits.default_output_reserve


def test_key_limits_apply_alongside_the_tenants(gw: Gateway, admin: httpx.Client) -> None:
    made = admin.post("/admin/keys", json={"tenant": "default"}).json()
    _set(admin, "key", made["id"], {"rpm": 1})
    _set(admin, "tenant", "default", {"rpm": 100})
    assert _chat(gw, key=made["key"]).status_code == 200
    refused = _chat(gw, key=made["key"])
    assert (
        refused.status_code == 429 and f"key '{made['id']}'" in refused.json()["error"]["message"]
    )
    assert _chat(gw).status_code == 200  # the tenant's other key is not affected


def test_budget_survives_a_restart(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("budget-data")
    first = make_gateway(_config(upstream.base_url), data_dir=data)
    with httpx.Client(
        base_url=first.url, headers={"authorization": f"Bearer {first.admin_key}"}
    ) as admin:
        _set(admin, "tenant", "default", {"usd_per_day": {"hard": 60}})
    assert _chat(first, "pricey", max_tokens=5).status_code == 200
    assert _chat(first, "pricey", max_tokens=5).status_code == 200  # $24 spent
    first.wait_rows(2)
    first.stop()
    second = make_gateway(_config(upstream.base_url), data_dir=data)
    second.tenant_key = first.tenant_key
    # In-process counters start from the ledger's $24, not from zero: $24 + $39 > $60.
    assert _chat(second, "pricey", max_tokens=5).status_code == 429


@pytest.mark.parametrize(
    ("path", "policy", "fragment"),
    [
        ("/admin/limits/tenant/default", {"rpm": 0}, "rpm"),
        ("/admin/limits/tenant/default", {"usd_per_day": {"soft": 5, "hard": 1}}, "soft"),
        ("/admin/limits/tenant/default", {"rpn": 5}, "rpn"),
        ("/admin/limits/tenant/nobody", {"rpm": 5}, "nobody"),
        ("/admin/limits/team/default", {"rpm": 5}, "/admin/limits/tenant"),
    ],
)
def test_bad_policies_are_400(
    admin: httpx.Client, path: str, policy: dict[str, object], fragment: str
) -> None:
    resp = admin.put(path, json=policy)
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]["message"]


def test_image_parts_reserve_their_bound_so_a_burst_cannot_overspend(
    gw: Gateway, admin: httpx.Client
) -> None:
    budget = 0.1
    _set(admin, "tenant", "default", {"usd_per_day": {"hard": budget}})
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "model": "vision",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}],
        "max_tokens": 5,
    }
    price = 10 / 1e6
    reservation = (prompt_token_bound(body, _bounds(gw, "vision")) + 5) * price
    cost = (MEDIA_PROMPT_TOKENS + 3 + 3 + 3) * price  # 3 words of prompt, echoed back

    async def burst() -> list[httpx.Response]:
        headers = {"authorization": f"Bearer {gw.tenant_key}"}
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as http:
            url = f"{gw.base_url}/chat/completions"
            return await asyncio.gather(
                *(http.post(url, json=body, headers=headers) for _ in range(50))
            )

    results = asyncio.run(burst())
    served = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code != 200]
    assert served and refused
    assert all(
        r.status_code == 429 and r.json()["error"]["type"] == "insufficient_quota" for r in refused
    )
    rows = [r for r in gw.wait_rows(50) if r["status"] == 200]
    assert len(rows) == len(served)
    assert all(r["prompt_tokens"] == MEDIA_PROMPT_TOKENS + 6 for r in rows)  # the upstream's count
    spend = sum(float(str(r["cost_usd"])) for r in rows)
    assert spend == pytest.approx(cost * len(served))
    assert spend <= budget + reservation
    counted = admin.get("/admin/limits/tenant/default").json()["usage"]["usd_per_day"]["used"]
    assert counted == pytest.approx(spend)


def _bounds(gw: Gateway, alias: str) -> PartBounds:
    return gw.services.settings.models[alias].deployments[0].bounds


def _completion(gw: Gateway, **extra: object) -> httpx.Response:
    body = {"model": "echo", "prompt": "a b c", **extra}
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    return httpx.post(f"{gw.base_url}/completions", json=body, headers=headers, timeout=10)


def test_reservations_count_every_choice_the_spec_allows_asking_for(
    gw: Gateway, admin: httpx.Client
) -> None:
    """`n: 2.0` is the integer 2 (JSON Schema), and `best_of` generates (and bills)
    that many completions: the reservation covers them all. A completions prompt
    "a b c" bounds at 5 bytes + 16 template tokens = 21; the echo uses 6 + 3 = 9."""
    _set(admin, "tenant", "default", {"tpm": 10_000})
    first = _completion(gw, max_tokens=10, n=2.0)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-tokens"] == str(10_000 - (21 + 2 * 10))
    second = _completion(gw, max_tokens=10, best_of=3.0)  # the first settled to 9
    assert second.status_code == 200, second.text
    assert second.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 9 - (21 + 3 * 10))


def test_a_negative_output_cap_is_no_cap_to_the_reservation(
    gw: Gateway, admin: httpx.Client, upstream: Upstream
) -> None:
    """The chat spec sets no minimum on max_tokens, and llama.cpp reads -1 as no
    limit: a limited caller's request is capped at the reserve, as if left out."""
    _set(admin, "tenant", "default", {"tpm": 100_000})
    assert _chat(gw, max_tokens=-1).status_code == 200
    assert upstream.fake.seen[-1].body["max_tokens"] == 1024  # limits.default_output_reserve
    assert _chat(gw, max_completion_tokens=-5, max_tokens=7).status_code == 200
    sent = upstream.fake.seen[-1].body
    assert (sent["max_completion_tokens"], sent["max_tokens"]) == (1024, 1024)


def _respond(gw: Gateway, **body: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    return httpx.post(
        f"{gw.base_url}/responses", json={"model": "echo", **body}, headers=headers, timeout=10
    )


def test_a_continued_conversation_reserves_all_of_it_not_just_its_new_turn(
    gw: Gateway, admin: httpx.Client
) -> None:
    # A long first turn, stored; then limits that the new turn alone fits in easily.
    long_turn = " ".join(["abcd"] * 400)  # 2,000 bytes: a bound of about 2,000 tokens
    first = _respond(gw, input=long_turn, max_output_tokens=16)
    assert first.status_code == 200, first.text
    _set(admin, "tenant", "default", {"tpm": 1500})
    assert _respond(gw, input="hi", max_output_tokens=16).status_code == 200
    # Continued by id, the upstream is sent the whole conversation: it must be reserved.
    refused = _respond(
        gw, input="hi", previous_response_id=first.json()["id"], max_output_tokens=16
    )
    assert refused.status_code == 429, refused.text
    err = refused.json()["error"]
    assert err["type"] == "tokens"
    requested = int(err["message"].split("requested ")[1].split(".")[0])
    assert requested > 2000  # the stored turn's 2,000 bytes, its output and the new turn
    # Within a larger limit it goes through, and says how much it reserved.
    _set(admin, "tenant", "default", {"tpm": 100_000})
    ok = _respond(gw, input="hi", previous_response_id=first.json()["id"], max_output_tokens=16)
    assert ok.status_code == 200, ok.text
    assert 100_000 - int(ok.headers["x-ratelimit-remaining-tokens"]) > 2000


def test_a_continued_conversation_without_reported_usage_is_estimated_whole(gw: Gateway) -> None:
    # When the upstream reports no usage, the ledger's estimate of the prompt
    # covers the stored conversation the upstream was sent, not just the new turn.
    first = _respond(gw, input=" ".join(["abcd"] * 400), max_output_tokens=16)
    assert first.status_code == 200, first.text
    alone = _respond(gw, model="silent", input="hi", max_output_tokens=16)
    continued = _respond(
        gw,
        model="silent",
        input="hi",
        previous_response_id=first.json()["id"],
        max_output_tokens=16,
    )
    assert alone.status_code == continued.status_code == 200, continued.text
    rows = {r["request_id"]: r for r in gw.wait_rows(3)}
    alone_row = rows[alone.headers["x-request-id"]]
    continued_row = rows[continued.headers["x-request-id"]]
    assert int(str(alone_row["prompt_tokens"])) < 10
    # 2,000 characters of the first turn at about four a token.
    assert int(str(continued_row["prompt_tokens"])) >= 450, continued_row
