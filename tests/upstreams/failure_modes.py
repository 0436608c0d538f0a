"""The failure modes the remote adapters share, as one table per provider:
how its deployment is built, which fake model (for Azure, which deployment)
triggers which failure, which call meets it (whole or streamed, per
endpoint), and what the adapter must raise or hand on. The adapter tests
parametrize over these tables, so the four adapters are held to the same
rules (kind, status, retry hint, the retry rule the gateway derives from
them) and a new failure mode is one row, not one more copy of a test.

Two kinds of call. The OpenAI wire (OpenAI, Azure OpenAI) goes to the adapter
as the caller's body and comes back as bytes, as the gateway relays them: a
mid-stream error is the wire's own error event, handed on. The canonical
providers (Gemini, Bedrock) go through their codec, as the gateway translates
them: a stream that breaks after its first word ends in a StreamError.

What only one provider does (OpenAI's quota 429, Azure's content filter,
Bedrock's signatures, ...) stays in that provider's test file."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from forebay.config.settings import Deployment
from forebay.errors import UpstreamFailure
from forebay.gateway.failures import Retry, retry_rule
from forebay.protocols.bedrock_converse import BedrockConverseCodec
from forebay.protocols.canonical import StreamEnd, StreamError, TextDelta
from forebay.protocols.gemini import GeminiCodec
from forebay.upstreams.base import Endpoint
from forebay.upstreams.registry import remote_upstream
from tests.support import azure_openai_server, bedrock_server, gemini_server, openai_api_server
from tests.support.deployments import deployment
from tests.support.servers import free_port
from tests.upstreams.calls import OPENAI_WIRE, Call, canonical


@dataclass(frozen=True)
class Raises:
    """The call fails with this UpstreamFailure."""

    kind: str
    rule: Retry
    status: int | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class HandsOn:
    """The adapter hands the answer on as it came (the codec, or the client, judges it)."""

    what: str
    check: Callable[[bytes], bool]


@dataclass(frozen=True)
class Breaks:
    """The canonical stream carries the first word, then ends in this StreamError
    (None: any type), never in a StreamEnd."""

    type: str | None
    status: int


Expect = Raises | HandsOn | Breaks


@dataclass(frozen=True)
class Case:
    trigger: str
    call: str
    expect: Expect
    extra: str = ""  # more of the deployment's config, e.g. a short timeout

    def __str__(self) -> str:
        return f"{self.call}-{self.trigger}"


@dataclass(frozen=True)
class Provider:
    name: str
    deploy: Callable[[str, str, str], Deployment]  # (base_url, trigger, extra)
    calls: Mapping[str, Call]
    envelope: Callable[[Any, int], bool]  # is this error body the provider's, for that status
    served: str  # a trigger that answers
    foreign: Endpoint  # an endpoint the provider does not serve
    cases: tuple[Case, ...]


def statuses(
    calls: Iterable[str], rows: list[tuple[str, int, str | None, Retry]]
) -> tuple[Case, ...]:
    """Each (trigger, status, retry_after, rule) row, met by each of these calls."""
    return tuple(
        Case(trigger, call, Raises("status", rule, status, retry))
        for trigger, status, retry, rule in rows
        for call in calls
    )


async def check(provider: Provider, base_url: str, case: Case) -> None:
    dep = provider.deploy(base_url, case.trigger, case.extra)
    call = provider.calls[case.call]
    expect = case.expect
    if isinstance(expect, Raises):
        with pytest.raises(UpstreamFailure) as raised:
            await call(dep)
        failure = raised.value
        got = (failure.kind, failure.status, failure.retry_after)
        assert got == (expect.kind, expect.status, expect.retry_after), failure.detail
        assert retry_rule(failure) is expect.rule
        if expect.status is not None:
            assert provider.envelope(orjson.loads(failure.body), expect.status), failure.body
    elif isinstance(expect, HandsOn):
        body = await call(dep)
        assert expect.check(body), (expect.what, body)
    else:
        events = await call(dep)
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["two"], events
        err = events[-1]
        assert isinstance(err, StreamError), events
        assert err.status == expect.status, err
        if expect.type is not None:
            assert err.type == expect.type, err
        assert not any(isinstance(e, StreamEnd) for e in events)


async def check_unreachable(provider: Provider, call: str) -> None:
    """A dead port: a connect failure, worth trying anywhere else, and a probe
    that says unreachable."""
    dep = provider.deploy(f"http://127.0.0.1:{free_port()}", provider.served, "")
    up = remote_upstream(dep)
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await provider.calls[call](dep)
        result = await up.probe(1.0)
    finally:
        await up.close()
    assert raised.value.kind == "connect" and retry_rule(raised.value) is Retry.ANYWHERE
    assert (result.ok, result.verdict, result.healthy) == (False, "unreachable", False)


async def check_foreign_endpoint(provider: Provider, base_url: str, seen: list[Any]) -> None:
    """An endpoint the provider does not serve is refused before anything is sent."""
    before = len(seen)
    up = remote_upstream(provider.deploy(base_url, provider.served, ""))
    try:
        with pytest.raises(UpstreamFailure) as raised:
            await up.complete(provider.foreign, {"model": provider.served, "input": "x"})
    finally:
        await up.close()
    assert raised.value.kind == "protocol" and len(seen) == before


def _more(extra: str) -> str:
    return f", {extra}" if extra else ""


# The OpenAI wire: the same answers (openai_answers.py) behind OpenAI's and Azure's routes.


def _ends_in_the_wires_error(body: bytes) -> bool:
    """Chat's `data: {"error": ...}` or Responses' `event: error`, after the first word."""
    last = body.rstrip(b"\n").split(b"\n\n")[-1]
    data = orjson.loads(last.split(b"data: ", 1)[1])
    return b"hello" in body and ("error" in data or data.get("type") == "error")


def _openai_wire_cases() -> tuple[Case, ...]:
    """Garbled (an HTML page, handed on: the codec judges it), dropped half-way,
    slow to its first byte, and a stream that ends in the wire's error event."""
    html = HandsOn("the HTML page", lambda body: body.startswith(b"<html>"))
    wire_error = HandsOn("the error event", _ends_in_the_wires_error)
    timeout = Raises("timeout", Retry.NO)
    return (
        Case("garbled", "chat", html),
        Case("garbled", "responses", html),
        *(Case("drop", call, Raises("protocol", Retry.ELSEWHERE)) for call in OPENAI_WIRE),
        *(Case("slow-3000", call, timeout, "timeout_s: 0.3") for call in OPENAI_WIRE),
        Case("mid-error", "chat-stream", wire_error),
        Case("mid-error", "responses-stream", wire_error),
    )


OPENAI = Provider(
    name="openai",
    deploy=lambda url, model, extra: deployment(
        f"provider: openai, base_url: '{url}/v1', model: {model}, "
        f"api_key: '{openai_api_server.API_KEY}'{_more(extra)}"
    ),
    calls=OPENAI_WIRE,
    envelope=lambda body, _status: "message" in body["error"],
    served="gpt-4o-mini",
    foreign=Endpoint.MESSAGES,
    cases=(
        *statuses(
            OPENAI_WIRE,
            [
                ("rate-limited", 429, "7", Retry.ELSEWHERE),
                ("rate-reset", 429, "90", Retry.ELSEWHERE),  # the tokens limit is spent: 1m30s
                ("quota", 429, "3600", Retry.ELSEWHERE),
                ("server-error", 500, None, Retry.ELSEWHERE),
                ("overloaded", 503, None, Retry.ANYWHERE),
                ("invalid", 400, None, Retry.NO),
            ],
        ),
        *_openai_wire_cases(),
    ),
)

AZURE_OPENAI = Provider(
    name="azure_openai",
    deploy=lambda url, name, extra: deployment(
        f"provider: azure_openai, base_url: '{url}', model: gpt-4o, azure_deployment: {name}, "
        f"api_key: '{azure_openai_server.API_KEY}'{_more(extra)}"
    ),
    calls=OPENAI_WIRE,
    envelope=lambda body, _status: "message" in body["error"],
    served="gpt-4o-prod",
    foreign=Endpoint.MESSAGES,
    cases=(
        *statuses(
            OPENAI_WIRE,
            [
                ("rate-limited", 429, "2", Retry.ELSEWHERE),  # retry-after-ms 1500, rounded up
                ("server-error", 500, None, Retry.ELSEWHERE),
                ("filtered", 400, None, Retry.NO),
                ("no-such-deployment", 404, None, Retry.ELSEWHERE),
            ],
        ),
        *_openai_wire_cases(),
    ),
)


# The canonical providers, through their codecs.

GEMINI_CALLS = canonical(GeminiCodec())
BEDROCK_CALLS = canonical(BedrockConverseCodec())

GEMINI = Provider(
    name="gemini",
    deploy=lambda url, model, extra: deployment(
        f"provider: gemini, base_url: '{url}', model: {model}, "
        f"api_key: '{gemini_server.API_KEY}'{_more(extra)}"
    ),
    calls=GEMINI_CALLS,
    envelope=lambda body, status: body["error"]["code"] == status,
    served="gemini-echo",
    foreign=Endpoint.EMBEDDINGS,
    cases=(
        *statuses(
            ("whole", "stream"),
            [
                ("gemini-429", 429, "18", Retry.ELSEWHERE),  # RetryInfo 17.2s, rounded up
                ("gemini-503", 503, None, Retry.ANYWHERE),
                ("gemini-500", 500, None, Retry.ELSEWHERE),
            ],
        ),
        Case("gemini-midstream", "stream", Breaks("unavailable", 503)),
        Case("gemini-garbled", "stream", Breaks("upstream_stream_error", 502)),
        Case("gemini-cut", "stream", Breaks(None, 502)),
        Case("gemini-garbled", "stream-in-pieces", Breaks("upstream_stream_error", 502)),
    ),
)

BEDROCK = Provider(
    name="bedrock",
    deploy=lambda url, model, extra: deployment(
        f"provider: bedrock, base_url: '{url}', model: '{model}', "
        f"aws: {{region: {bedrock_server.REGION}}}{_more(extra)}"
    ),
    calls=BEDROCK_CALLS,
    envelope=lambda body, _status: bool(body["message"]),
    served="echo",
    foreign=Endpoint.EMBEDDINGS,
    cases=(
        *statuses(
            ("whole", "stream"),
            [
                ("throttle", 429, "1", Retry.ELSEWHERE),
                ("not-ready", 429, "2", Retry.ELSEWHERE),
                ("unavailable", 503, None, Retry.ANYWHERE),
                ("model-error", 502, None, Retry.ANYWHERE),  # AWS's 424, re-stated
            ],
        ),
        Case("stream-throttle", "stream", Breaks("throttlingException", 429)),
        Case("stream-garbled", "stream", Breaks("upstream_stream_error", 502)),
        Case("stream-cut", "stream", Breaks("upstream_stream_error", 502)),
        Case("stream-cut", "stream-in-pieces", Breaks("upstream_stream_error", 502)),
    ),
)
