"""Overload from every provider counts towards a deployment's adaptive limit:
Anthropic's 529 overloaded_error, Gemini's 503 UNAVAILABLE and 429
RESOURCE_EXHAUSTED, Bedrock's ThrottlingException and
ServiceUnavailableException. Each failure is the one the real adapter raises
against its provider's loopback server; the pool then hears it from two
tenants, as the adaptive limit requires, on a controllable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forebay.config.traffic import DEFAULT_CLASSES, AdmissionConfig, ResilienceConfig
from forebay.errors import UpstreamFailure
from forebay.gateway.admission import Pool, Ticket
from forebay.gateway.health import DeploymentState
from forebay.gateway.routing import Ordered, RouteRequest
from forebay.upstreams.base import Endpoint, Upstream
from forebay.upstreams.registry import remote_upstream
from tests.support import anthropic_server, bedrock_server, gemini_server
from tests.support.deployments import deployment
from tests.support.servers import ServerThread

CEILING = 8


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    anthropic = anthropic_server.AnthropicServer()
    gemini = gemini_server.FakeGemini()
    bedrock = bedrock_server.FakeBedrock()
    with (
        ServerThread(anthropic.app()) as a,
        ServerThread(gemini.app()) as g,
        ServerThread(bedrock.app()) as b,
    ):
        yield {"anthropic": a.url, "gemini": g.url, "bedrock": b.url}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fake Bedrock's keys in the standard variables; no shared files or IMDS."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bedrock_server.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bedrock_server.SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _upstream(provider: str, base_url: str, model: str) -> tuple[Upstream, dict[str, Any]]:
    common = f"max_concurrency: {CEILING}, adaptive_floor: 1"
    text = [{"role": "user", "content": "hello"}]
    if provider == "anthropic":
        spec = f"provider: anthropic, api_key: '{anthropic_server.API_KEY}'"
        payload: dict[str, Any] = {"model": model, "max_tokens": 16, "messages": text}
    elif provider == "gemini":
        spec = f"provider: gemini, api_key: '{gemini_server.API_KEY}'"
        payload = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    else:
        spec = f"provider: bedrock, aws: {{region: {bedrock_server.REGION}}}"
        payload = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}
    dep = deployment(f"{spec}, base_url: '{base_url}', model: '{model}', {common}")
    return remote_upstream(dep), payload


async def _failure(up: Upstream, payload: dict[str, Any]) -> UpstreamFailure:
    with pytest.raises(UpstreamFailure) as caught:
        await up.complete(Endpoint.MESSAGES, payload)
    return caught.value


def _limit_after(up: Upstream, failure: UpstreamFailure, tenants: list[str]) -> float:
    """The adaptive limit after tries in flight together, one per entry of
    `tenants`, all fail so (a 429 cools the deployment down: later tries would
    not reach it, but those already sent fail alike)."""
    now = [1000.0]
    state = DeploymentState.for_upstream(up, ResilienceConfig())
    pool = Pool("m", [state], Ordered(), AdmissionConfig(), clock=lambda: now[0])
    leases = []
    for tenant in tenants:
        ticket = Ticket(
            "interactive", DEFAULT_CLASSES["interactive"], tenant, RouteRequest(1.0, b""), 2000.0
        )
        lease = pool.try_acquire(ticket)
        assert lease is not None
        leases.append(lease)
    for lease in leases:
        pool.failed(lease, failure)
        now[0] += 0.1
    assert pool.active == 0 and state.inflight == 0
    return state.limit


OVERLOADS = [
    ("anthropic", "overloaded", 529),
    ("gemini", "gemini-503", 503),
    ("gemini", "gemini-429", 429),
    ("bedrock", "throttle", 429),
    ("bedrock", "unavailable", 503),
]


@pytest.mark.parametrize(("provider", "model", "status"), OVERLOADS)
async def test_overload_from_every_provider_cuts_the_adaptive_limit(
    servers: dict[str, str], provider: str, model: str, status: int
) -> None:
    up, payload = _upstream(provider, servers[provider], model)
    try:
        failure = await _failure(up, payload)
    finally:
        await up.close()
    assert failure.status == status
    assert _limit_after(up, failure, ["a"] * 5) == CEILING  # one tenant is no evidence
    assert _limit_after(up, failure, ["a", "b", "a"]) == CEILING / 2


@pytest.mark.parametrize(
    ("provider", "model"), [("anthropic", "api-error"), ("gemini", "gemini-500")]
)
async def test_a_server_error_that_is_not_overload_leaves_the_limit(
    servers: dict[str, str], provider: str, model: str
) -> None:
    up, payload = _upstream(provider, servers[provider], model)
    try:
        failure = await _failure(up, payload)
    finally:
        await up.close()
    assert failure.status == 500
    assert _limit_after(up, failure, ["a", "b", "a", "b"]) == CEILING
