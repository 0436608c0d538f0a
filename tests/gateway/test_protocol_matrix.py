"""Every (inbound protocol x upstream kind) pair through one real gateway on
loopback: a text answer whole and streamed, a tool call (its transcript, and a
round trip driven by the protocol's own SDK), a mid-stream upstream failure,
and the ledger's usage and cost against a hand computation per provider.

Golden transcripts: the bytes a client sees, normalised for minted ids and
timestamps (matrix_inbound.normalise), are compared with
tests/gateway/golden/<inbound>/<kind>-<case>.txt. Each was read against the
protocol's public reference (OpenAI's Chat Completions object and chunk,
Anthropic's Messages and its stream events, OpenAI's Response and its events)
before it was checked in; set FOREBAY_UPDATE_GOLDEN=1 to rewrite them after a
deliberate change, then read the diff.

The columns are `INBOUND` (matrix_inbound.py: Chat and Messages;
matrix_responses.py: Responses, some cases with `store: false` so a native
Responses upstream is relayed untouched, the rest stored and translated); the
rows are `KINDS` (matrix_upstreams.py, with the hand computations of usage and
cost). The Responses goldens were read against OpenAI's Responses reference
(the openai SDK's types.responses): each event's fields, sequence_number up by
one, output_index / item_id of announced items, the final Response whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, start_gateway
from tests.support import (
    anthropic_server,
    azure_openai_server,
    bedrock_server,
    gemini_server,
    openai_api_server,
)
from tests.support.matrix_inbound import INBOUND, TOOL_NAME, Inbound, normalise
from tests.support.matrix_upstreams import KINDS, PRICE, USER_TEXT, Hand, Kind
from tests.support.openai_server import FakeUpstream
from tests.support.servers import ServerThread

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FOREBAY_UPDATE_GOLDEN") == "1"

ROLES = ("text", "tools", "broken")


def _config(urls: dict[str, str]) -> str:
    lines = ["key_refresh_s: 0.2", "ledger: {flush_interval_s: 0.05}", "models:"]
    for kind in KINDS:
        for role in ROLES:
            model = getattr(kind, role)
            body = kind.deployment(urls[kind.server], model)
            dep = f"{{name: {kind.name}-{role}, {body}, price: {PRICE}}}"
            lines.append(f"  {kind.name}-{role}: {{deployments: [{dep}]}}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    apps = {
        "compat": FakeUpstream().app(),
        "openai": openai_api_server.OpenAIServer().app(),
        "azure": azure_openai_server.AzureServer().app(),
        "anthropic": anthropic_server.AnthropicServer().app(),
        "gemini": gemini_server.FakeGemini().app(),
        "bedrock": bedrock_server.FakeBedrock().app(),
    }
    threads = {name: ServerThread(app).start() for name, app in apps.items()}
    try:
        yield {name: t.url for name, t in threads.items()}
    finally:
        for t in threads.values():
            t.stop()


@pytest.fixture(scope="module")
def gw(servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(_config(servers), workdir=tmp_path_factory.mktemp("matrix"))
    try:
        for kind in KINDS:
            if kind.wire is None:
                continue
            for role in ROLES:
                for up in gateway.services.upstreams.by_alias[f"{kind.name}-{role}"]:
                    # The openai deployment speaks Chat and Responses; each row pins one,
                    # so Chat-speaking clients reach the Responses wire too.
                    up.wire = frozenset({kind.wire})
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        yield http


def _settled(gw: Gateway) -> bool:
    """Every slot and in-flight count given back."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pools = gw.services.traffic.pools.values()
        if not any(p.active or p.requests_in_flight for p in pools):
            return True
        time.sleep(0.02)
    return False


def _golden(inbound: Inbound, kind: Kind, case: str, raw: bytes) -> None:
    path = GOLDEN / inbound.name / f"{kind.name}-{case}.txt"
    got = normalise(raw)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(got)
    assert path.exists(), f"no golden transcript {path}; write it with FOREBAY_UPDATE_GOLDEN=1"
    assert got.decode() == path.read_text(), path


def _post(
    client: httpx.Client, gw: Gateway, inbound: Inbound, body: dict[str, Any]
) -> httpx.Response:
    resp = client.post(inbound.path, json=body, headers=inbound.auth(gw.tenant_key))
    assert resp.status_code == 200, resp.text
    return resp


def _row(gw: Gateway, resp: httpx.Response) -> tuple[Any, ...]:
    row = gw.row_for(resp.headers["x-request-id"])
    return (
        row["prompt_tokens"],
        row["completion_tokens"],
        row["cache_read_tokens"],
        row["cache_write_tokens"],
        row["reasoning_tokens"],
        row["protocol"],
        row["tokens_estimated"],
        row["cost_usd"],
    )


def _want(hand: Hand, inbound: Inbound) -> tuple[Any, ...]:
    fields = (hand.prompt, hand.completion, hand.cache_read, hand.cache_write, hand.reasoning)
    return (*fields, inbound.name, False, pytest.approx(hand.cost, rel=1e-9))


pairs = pytest.mark.parametrize(
    ("inbound", "kind"),
    [(i, k) for i in INBOUND for k in KINDS],
    ids=[f"{i.name}-{k.name}" for i in INBOUND for k in KINDS],
)
streamed = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


@pairs
@streamed
def test_text_answer_transcript_and_usage(
    gw: Gateway, client: httpx.Client, inbound: Inbound, kind: Kind, stream: bool
) -> None:
    # A system text of its own per case, so an Anthropic cache starts empty.
    system = f"Preamble for {inbound.name}-{kind.name}-{stream}"
    body = inbound.ask(f"{kind.name}-text", system, USER_TEXT, stream)
    first = _post(client, gw, inbound, body)
    text = inbound.stream_text(first.content) if stream else inbound.text_of(first.json())
    assert text == USER_TEXT
    _golden(inbound, kind, "text-stream" if stream else "text", first.content)
    again = _post(client, gw, inbound, body)
    assert _row(gw, first) == _want(kind.usage(inbound.name, 0), inbound)
    assert _row(gw, again) == _want(kind.usage(inbound.name, 1), inbound)
    assert _settled(gw)


@pairs
@streamed
def test_tool_call_transcript(
    gw: Gateway, client: httpx.Client, inbound: Inbound, kind: Kind, stream: bool
) -> None:
    resp = _post(client, gw, inbound, inbound.ask_tool(f"{kind.name}-tools", stream))
    call = inbound.stream_tool_call(resp.content) if stream else inbound.tool_call_of(resp.json())
    assert call == (TOOL_NAME, kind.tool_args)
    _golden(inbound, kind, "tool-stream" if stream else "tool", resp.content)
    # A Chat client streaming here did not ask for usage: it is metered all the same.
    assert _row(gw, resp) == _want(kind.tool_usage, inbound)
    assert _settled(gw)


@pairs
@streamed
def test_tool_round_trip_with_the_sdk(
    gw: Gateway, inbound: Inbound, kind: Kind, stream: bool
) -> None:
    name, args, answer = inbound.sdk_round_trip(gw.url, gw.tenant_key, f"{kind.name}-tools", stream)
    assert (name, args, answer) == (TOOL_NAME, kind.tool_args, kind.tool_answer)
    assert _settled(gw)


@pairs
def test_mid_stream_failure_is_the_clients_own_error_event(
    gw: Gateway, client: httpx.Client, inbound: Inbound, kind: Kind
) -> None:
    body = inbound.ask(f"{kind.name}-broken", "Preamble for failures", USER_TEXT, True)
    resp = _post(client, gw, inbound, body)  # the stream had started: a 200
    error = inbound.stream_error(resp.content)
    assert error["type"] and error["message"] == kind.broken_message, error
    _golden(inbound, kind, "error-stream", resp.content)
    row = gw.row_for(resp.headers["x-request-id"])
    assert row["status"] == 502 and row["error_type"], row
    assert _settled(gw)


@pairs
def test_mid_stream_failure_raises_in_the_sdk(gw: Gateway, inbound: Inbound, kind: Kind) -> None:
    message = inbound.sdk_stream_error(gw.url, gw.tenant_key, f"{kind.name}-broken")
    assert kind.broken_message in message
    assert _settled(gw)
