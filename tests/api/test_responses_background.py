"""Responses with `background: true`: the real `openai` client against Forebay
on loopback, to the loopback Chat upstream (echo, slow-<ms>, drip-<ms>)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory, Upstream, echo_config
from tests.support.ledger import read_ledger
from tests.support.process import ServeProcess


def _config(base_url: str) -> str:
    return (
        echo_config(base_url)
        + f"""
      slow:
        deployments: [{{name: fake-slow, base_url: "{base_url}", model: slow-3000}}]
      drip:
        deployments: [{{name: fake-drip, base_url: "{base_url}", model: drip-40}}]
    """
    )


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(_config(upstream.base_url))


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)


def _poll(client: openai.OpenAI, response_id: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = client.responses.retrieve(response_id)
        if got.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _idle(gw: Gateway, timeout: float = 10) -> dict[str, int]:
    """What the pools still hold once every request is over (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = {
            alias: p.active + p.requests_in_flight + p.retries_in_flight
            for alias, p in gw.services.traffic.pools.items()
            if p.active or p.requests_in_flight or p.retries_in_flight
        }
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.02)


def _set_limits(gw: Gateway, policy: dict[str, object]) -> None:
    resp = httpx.put(
        f"{gw.url}/admin/limits/tenant/default",
        json=policy,
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert resp.status_code == 200, resp.text


def _other_key(gw: Gateway) -> str:
    store = gw.services.store
    store.create_tenant("other")
    key = store.create_key("other").key
    gw.services.keyring.replace(store.active_principals())
    return key


def _frames(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[6:])
        for frame in text.split("\n\n")
        for line in frame.splitlines()
        if line.startswith("data: ")
    ]


def test_create_in_the_background_then_poll_until_completed(
    gw: Gateway, client: openai.OpenAI
) -> None:
    created = client.responses.create(model="echo", input="far away otters", background=True)
    assert created.status in ("queued", "in_progress") and created.background is True
    assert created.output == []
    done = _poll(client, created.id)
    assert done.status == "completed" and done.output_text == "far away otters"
    assert done.id == created.id and done.background is True
    assert done.usage is not None and done.usage.output_tokens == 3
    rows = gw.wait_rows(1)
    assert len(rows) == 1  # one ledger record, as for any request
    assert rows[0]["endpoint"] == "responses" and rows[0]["status"] == 200
    assert rows[0]["completion_tokens"] == 3
    # It can be continued like any stored response.
    again = client.responses.create(model="echo", input="next", previous_response_id=done.id)
    assert again.status == "completed"
    assert _idle(gw) == {}


def test_cancel_in_progress_gives_the_slot_and_the_reservation_back(
    gw: Gateway, client: openai.OpenAI
) -> None:
    _set_limits(gw, {"concurrent": 1, "tokens_per_day": {"hard": 100_000}})
    created = client.responses.create(model="slow", input="never mind", background=True)
    # The slot is held while it runs: a second request is refused.
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="echo", input="x")
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled" and cancelled.id == created.id
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.cancel(created.id).status == "cancelled"  # idempotent
    assert _idle(gw) == {}
    row = gw.wait_rows(1)[-1]
    assert (row["status"], row["error_type"]) == (499, "cancelled")
    # Slot and reservation are back: the next request is admitted and the day's
    # tokens counted are only what was used.
    ok = client.responses.create(model="echo", input="a b c", max_output_tokens=16)
    assert ok.status == "completed"
    totals = vars(gw.services.limiter.store)["_totals"]  # in-process counters
    used = [value for key, (value, _, _) in totals.items() if "tokens" in key]
    assert used and max(used) < 100  # the cancelled one's reservation is not left in it


def test_background_needs_store_and_a_boolean(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="echo", input="x", background=True, store=False)
    assert err.value.status_code == 400 and "store" in err.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="echo", input="x", extra_body={"background": "yes"})


def test_a_finished_background_response_cancels_to_its_final_state(
    client: openai.OpenAI,
) -> None:
    created = client.responses.create(model="echo", input="quick one", background=True)
    done = _poll(client, created.id)
    assert done.status == "completed"
    assert client.responses.cancel(created.id).status == "completed"
    plain = client.responses.create(model="echo", input="not in the background")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(plain.id)


def test_stream_in_the_background_then_resume_after_a_sequence_number(
    gw: Gateway, client: openai.OpenAI
) -> None:
    seen: list[Any] = []
    stream = client.responses.create(model="drip", input="x", background=True, stream=True)
    for event in stream:
        seen.append(event)
        if len(seen) == 8:
            break  # the client drops the stream: the work goes on
    stream.close()
    response_id = seen[0].response.id
    cursor = seen[-1].sequence_number
    with httpx.stream(
        "GET",
        f"{gw.base_url}/responses/{response_id}",
        params={"stream": "true", "starting_after": cursor},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
        timeout=30,
    ) as resumed:
        assert resumed.status_code == 200
        rest = _frames(resumed.read().decode())
    numbers = [e["sequence_number"] for e in rest]
    assert numbers == list(range(cursor + 1, cursor + 1 + len(numbers)))
    assert rest[-1]["type"] == "response.completed"
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    text += "".join(e["delta"] for e in rest if e["type"] == "response.output_text.delta")
    assert text == " ".join(f"w{i}" for i in range(50))
    assert _poll(client, response_id).output_text == text
    # The SDK's own resume (starting_after) replays from there too.
    again = client.responses.retrieve(response_id, stream=True, starting_after=cursor)
    assert [e.sequence_number for e in again] == numbers
    with pytest.raises(openai.BadRequestError):  # not a number
        client.responses.retrieve(response_id, stream=True, extra_query={"starting_after": "x"})
    assert len(gw.wait_rows(1)) == 1 and _idle(gw) == {}


def test_get_accepts_the_documented_include_values(client: openai.OpenAI) -> None:
    done = client.responses.create(model="echo", input="x")
    got = client.responses.retrieve(
        done.id, include=["reasoning.encrypted_content", "message.output_text.logprobs"]
    )
    assert got.id == done.id
    with pytest.raises(openai.BadRequestError):
        client.responses.retrieve(done.id, extra_query={"include": "no.such.thing"})
    with pytest.raises(openai.BadRequestError):  # not streamed in the background
        client.responses.retrieve(done.id, stream=True)


def test_another_tenant_can_neither_see_nor_cancel_it(gw: Gateway, client: openai.OpenAI) -> None:
    created = client.responses.create(model="slow", input="mine", background=True)
    other = openai.OpenAI(base_url=gw.base_url, api_key=_other_key(gw), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(created.id)
    with pytest.raises(openai.NotFoundError):
        list(other.responses.retrieve(created.id, stream=True))
    assert client.responses.cancel(created.id).status == "cancelled"


def test_a_background_response_pending_at_sigkill_is_failed_after_restart(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = tmp_path / "forebay.yaml"
    config.write_text(
        f"""
key_refresh_s: 0.2
models:
  slow:
    deployments: [{{name: fake-slow, base_url: "{upstream.base_url}", model: slow-30000}}]
"""
    )
    data = tmp_path / "data"
    args = ("--config", str(config), "--data-dir", str(data))
    env = {"FOREBAY_ADMIN_KEY": ADMIN_KEY}
    log = tmp_path / "serve.log"
    first = ServeProcess(*args, log=log, env=env).start()
    try:
        resp = httpx.post(
            f"{first.url}/admin/keys",
            json={"tenant": "default"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        key = resp.json()["key"]
        sdk = openai.OpenAI(base_url=f"{first.url}/v1", api_key=key, max_retries=0)
        created = sdk.responses.create(model="slow", input="long job", background=True)
        assert sdk.responses.retrieve(created.id).status in ("queued", "in_progress")
    finally:
        first.kill()  # SIGKILL, the batching writer may not have written its row yet
    second = ServeProcess(*args, log=log, env=env).start()
    try:
        sdk = openai.OpenAI(base_url=f"{second.url}/v1", api_key=key, max_retries=0)
        got = sdk.responses.retrieve(created.id)
        assert got.status == "failed" and got.error is not None
        assert got.error.code == "interrupted" and "stopped" in got.error.message
        assert sdk.responses.cancel(created.id).status == "failed"
    finally:
        second.kill()
    rows = read_ledger(f"sqlite:///{data / 'forebay.db'}")
    assert [(r["status"], r["error_type"]) for r in rows] == [(499, "interrupted")]
    assert not list((data / "background").glob("*/*.json"))  # recovered, then removed


def test_shutdown_cancels_what_outlives_its_grace_and_saves_it_failed(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = make_gateway(_config(upstream.base_url) + "\n    responses: {background_grace_s: 0.2}\n")
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0)
    created = client.responses.create(model="slow", input="too long", background=True)
    quick = client.responses.create(model="echo", input="done soon", background=True)
    assert _poll(client, quick.id).status == "completed"
    gw.stop()  # the lifespan's shutdown, as SIGTERM runs it
    table = gw.services.responses.table
    tenant = gw.services.store.find_tenant("default")
    assert tenant is not None
    got = table.get(tenant.id, created.id, time.time())
    assert got is not None and got.status == "failed"
    assert got.body["error"]["code"] == "interrupted"
    done = table.get(tenant.id, quick.id, time.time())
    assert done is not None and done.status == "completed"
    outcomes = sorted((r["status"], r["error_type"]) for r in gw.ledger_rows())
    assert outcomes == [(200, None), (499, "cancelled")]
    assert gw.services.traffic.pools["slow"].active == 0
    assert not list((gw.data_dir / "background").glob("*"))  # a clean stop leaves nothing


def test_a_running_background_response_cannot_be_continued_yet(client: openai.OpenAI) -> None:
    created = client.responses.create(model="slow", input="first turn", background=True)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="slow", input="next", previous_response_id=created.id)
    assert refused.value.code == "previous_response_in_progress"
    assert refused.value.param == "previous_response_id"
    assert client.responses.cancel(created.id).status == "cancelled"
