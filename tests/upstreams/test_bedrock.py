"""Bedrock end to end on loopback: canonical request -> codec -> adapter (SigV4
by botocore, credentials from the environment or the config) -> a Bedrock
server that verifies the signature and speaks Converse and ConverseStream
(AWS event-stream frames) -> codec -> canonical reply or events. Never real AWS:
the credentials are the fake's test keys, given through monkeypatched env vars.
The failures it shares with the other adapters (throttling and overload
statuses, streams that break, a dead port, a foreign endpoint) are BEDROCK's
rows in failure_modes.py."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from forebay.config.load import load_settings
from forebay.config.settings import Deployment
from forebay.errors import ConfigError, UpstreamFailure
from forebay.gateway.failures import Retry, retry_rule
from forebay.protocols.bedrock_converse import BedrockConverseCodec
from forebay.protocols.canonical import (
    GenRequest,
    Message,
    PartStart,
    ReasoningDelta,
    ReasoningPart,
    Stop,
    StreamEnd,
    TextDelta,
    TextPart,
    Tool,
    ToolArgsDelta,
    ToolCallPart,
    ToolResultPart,
)
from forebay.upstreams.base import WireProtocol
from forebay.upstreams.bedrock import BedrockUpstream
from forebay.upstreams.probe import ProbeResult
from forebay.upstreams.registry import remote_upstream
from tests.support.bedrock_server import (
    ACCESS_KEY,
    BEARER_TOKEN,
    CACHE_READ,
    CACHE_WRITE,
    REGION,
    SECRET_KEY,
    SESSION_TOKEN,
    SIGNATURE,
    FakeBedrock,
)
from tests.support.servers import ServerThread
from tests.upstreams import calls, failure_modes
from tests.upstreams.failure_modes import BEDROCK

CODEC = BedrockConverseCodec()
WEATHER = Tool(
    "get_weather", "Weather by city", {"type": "object", "properties": {"city": {"type": "string"}}}
)
_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_BEARER_TOKEN_BEDROCK",
)


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeBedrock, str]]:
    server = FakeBedrock()
    with ServerThread(server.app()) as thread:
        yield server, thread.url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The fake's keys in the standard environment variables; no shared files or IMDS."""
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def deployment(tmp_path: Path, base_url: str, model: str, extra: str = "") -> Deployment:
    path = tmp_path / "forebay.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            models:
              b:
                deployments:
                  - name: rock
                    provider: bedrock
                    base_url: "{base_url}"
                    model: "{model}"
                    aws: {{region: {REGION}}}
            """
        )
        + textwrap.indent(textwrap.dedent(extra), " " * 8)
    )
    return load_settings(path, data_dir=tmp_path).models["b"].deployments[0]


async def probe(dep: Deployment) -> ProbeResult:
    up = BedrockUpstream(dep)
    try:
        return await up.probe(2.0)
    finally:
        await up.close()


def test_config(tmp_path: Path) -> None:
    dep = deployment(tmp_path, "http://x", "m")
    assert dep.aws is not None and dep.aws.region == REGION
    up = remote_upstream(dep)
    assert isinstance(up, BedrockUpstream) and up.wire == frozenset({WireProtocol.BEDROCK_CONVERSE})
    path = tmp_path / "f.yaml"
    path.write_text(
        "models:\n  b:\n    deployments:\n"
        "      - {name: r, provider: bedrock, model: m, aws: {region: eu-west-1}}\n"
    )
    assert load_settings(path, data_dir=tmp_path).models["b"].deployments[0].base_url == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com"
    )
    for bad in (
        "{name: r, provider: bedrock, model: m}",  # no region
        "{name: r, provider: bedrock, model: m, aws: {region: moon}}",
        "{name: r, provider: bedrock, model: m, aws: {region: us-east-1, access_key_id: A}}",
        "{name: r, provider: bedrock, model: m, aws: {region: us-east-1, colour: red}}",
        "{name: r, provider: gemini, model: m, aws: {region: us-east-1}}",
    ):
        path.write_text(f"models:\n  b:\n    deployments:\n      - {bad}\n")
        with pytest.raises(ConfigError):
            load_settings(path, data_dir=tmp_path)


async def test_signed_reply_with_cache_usage(tmp_path: Path, fake: tuple[FakeBedrock, str]) -> None:
    server, url = fake
    dep = deployment(tmp_path, url, "echo-v1:0")
    reply = await calls.complete(CODEC, dep, calls.ask("one two three"))
    sent = server.seen[-1]
    assert sent.path == "/model/echo-v1%3A0/converse"  # the id is one encoded segment
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "model" not in sent.body
    assert [p.text for p in reply.parts if isinstance(p, TextPart)] == ["one two three"]
    assert reply.stop.kind is Stop.END and reply.stop.raw == "end_turn"
    # Hand computation: Bedrock's inputTokens (3) leave out cache reads and writes.
    assert reply.usage is not None
    assert reply.usage.input_tokens == 3 + CACHE_READ + CACHE_WRITE
    assert (reply.usage.cache_read_tokens, reply.usage.cache_write_tokens) == (
        CACHE_READ,
        CACHE_WRITE,
    )
    assert reply.usage.output_tokens == 3


async def test_session_token_from_env(
    tmp_path: Path, fake: tuple[FakeBedrock, str], aws_env: pytest.MonkeyPatch
) -> None:
    server, url = fake
    aws_env.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    server.require_token = True
    try:
        reply = await calls.complete(
            CODEC, deployment(tmp_path, url, "echo"), calls.ask("hi there")
        )
    finally:
        server.require_token = False
    assert server.seen[-1].headers["x-amz-security-token"] == SESSION_TOKEN
    assert reply.stop.kind is Stop.END


async def test_tool_call_and_reasoning_round_trip(
    tmp_path: Path, fake: tuple[FakeBedrock, str]
) -> None:
    server, url = fake
    req = calls.ask("weather in Paris?", tools=[WEATHER])
    reply = await calls.complete(CODEC, deployment(tmp_path, url, "tool"), req)
    assert reply.stop.kind is Stop.TOOL_CALLS
    reasoning, call = reply.parts
    assert isinstance(reasoning, ReasoningPart) and reasoning.signature == SIGNATURE
    assert isinstance(call, ToolCallPart) and orjson.loads(call.arguments) == {"city": "Paris"}
    follow = GenRequest(
        model="b",
        messages=[
            *req.messages,
            Message("assistant", list(reply.parts)),
            Message("tool", [ToolResultPart(call.id, [TextPart("18C")])]),
            Message("user", [TextPart("and tomorrow?")]),
        ],
        tools=[WEATHER],
    )
    reply = await calls.complete(CODEC, deployment(tmp_path, url, "echo"), follow)
    messages = server.seen[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # tool + user merged
    assert messages[1]["content"][0]["reasoningContent"]["reasoningText"]["signature"] == SIGNATURE
    assert messages[1]["content"][1]["toolUse"]["toolUseId"] == "tooluse_abc123"
    assert messages[2]["content"][0] == {
        "toolResult": {"toolUseId": "tooluse_abc123", "content": [{"text": "18C"}]}
    }
    assert [p.text for p in reply.parts if isinstance(p, TextPart)] == ["and tomorrow?"]


@pytest.mark.parametrize("piece", [0, 7])
async def test_stream_text_and_usage(
    tmp_path: Path, fake: tuple[FakeBedrock, str], piece: int
) -> None:
    events = await calls.stream(
        CODEC, deployment(tmp_path, fake[1], "echo"), calls.ask("alpha beta gamma"), piece=piece
    )
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "alpha beta gamma"
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.stop.kind is Stop.END
    assert end.usage is not None and end.usage.input_tokens == 3 + CACHE_READ + CACHE_WRITE


async def test_stream_tool_call(tmp_path: Path, fake: tuple[FakeBedrock, str]) -> None:
    events = await calls.stream(
        CODEC, deployment(tmp_path, fake[1], "tool"), calls.ask("weather?", tools=[WEATHER])
    )
    starts = [e for e in events if isinstance(e, PartStart)]
    assert [(s.index, s.kind) for s in starts] == [(0, "reasoning"), (1, "tool_call")]
    assert (starts[1].tool_call_id, starts[1].tool_name) == ("tooluse_abc123", "get_weather")
    assert orjson.loads("".join(e.json for e in events if isinstance(e, ToolArgsDelta))) == {
        "city": "Paris"
    }
    assert [e.signature for e in events if isinstance(e, ReasoningDelta) and e.signature] == [
        SIGNATURE
    ]
    assert isinstance(events[-1], StreamEnd) and events[-1].stop.kind is Stop.TOOL_CALLS


async def test_guardrail_is_a_content_filter(tmp_path: Path, fake: tuple[FakeBedrock, str]) -> None:
    dep = deployment(tmp_path, fake[1], "guardrail")
    reply = await calls.complete(CODEC, dep, calls.ask("something"))
    assert (reply.stop.kind, reply.stop.raw) == (Stop.CONTENT_FILTER, "guardrail_intervened")
    end = (await calls.stream(CODEC, dep, calls.ask("something")))[-1]
    assert isinstance(end, StreamEnd) and end.stop.kind is Stop.CONTENT_FILTER


@pytest.mark.parametrize("case", BEDROCK.cases, ids=str)
async def test_failure_modes(fake: tuple[FakeBedrock, str], case: failure_modes.Case) -> None:
    await failure_modes.check(BEDROCK, fake[1], case)


@pytest.mark.parametrize("call", ["whole", "stream"])
async def test_unreachable(call: str) -> None:
    await failure_modes.check_unreachable(BEDROCK, call)


async def test_embeddings_are_not_a_bedrock_endpoint(fake: tuple[FakeBedrock, str]) -> None:
    server, url = fake
    await failure_modes.check_foreign_endpoint(BEDROCK, url, server.seen)


async def test_validation_error_is_the_callers(
    tmp_path: Path, fake: tuple[FakeBedrock, str]
) -> None:
    dep = deployment(tmp_path, fake[1], "echo")
    bad = GenRequest(model="b", messages=[Message("assistant", [TextPart("I start")])])
    with pytest.raises(UpstreamFailure) as caught:
        await calls.complete(CODEC, dep, bad)
    assert caught.value.status == 400 and retry_rule(caught.value) is Retry.NO


async def test_bad_signature_and_unknown_key_get_403(
    tmp_path: Path, fake: tuple[FakeBedrock, str], aws_env: pytest.MonkeyPatch
) -> None:
    dep = deployment(tmp_path, fake[1], "echo")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(UpstreamFailure) as caught:
        await calls.complete(CODEC, dep, calls.ask("hi"))
    assert caught.value.status == 403 and b"signature we calculated" in caught.value.body
    assert retry_rule(caught.value) is Retry.ELSEWHERE
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDSOMEONEELSE00000")
    result = await probe(dep)
    assert (result.ok, result.verdict, result.healthy) == (False, "bad key", False)


async def test_explicit_keys_and_api_key(
    tmp_path: Path, fake: tuple[FakeBedrock, str], aws_env: pytest.MonkeyPatch
) -> None:
    server, url = fake
    for name in _AWS_VARS:
        aws_env.delenv(name, raising=False)
    aws_env.setenv("MY_SECRET", SECRET_KEY)
    keys = f"""
    aws: {{region: {REGION}, access_key_id: {ACCESS_KEY}, secret_access_key: "${{MY_SECRET}}"}}
    """
    path_dep = deployment(tmp_path, url, "echo")
    text = (
        (tmp_path / "forebay.yaml").read_text().replace(f"aws: {{region: {REGION}}}", keys.strip())
    )
    (tmp_path / "forebay.yaml").write_text(text)
    dep = load_settings(tmp_path / "forebay.yaml", data_dir=tmp_path).models["b"].deployments[0]
    assert dep.aws is not None and SECRET_KEY in dep.secrets() and path_dep.aws is not None
    assert (await calls.complete(CODEC, dep, calls.ask("keyed"))).stop.kind is Stop.END
    # No keys anywhere: a clear failure that blames the deployment, not the caller.
    with pytest.raises(UpstreamFailure) as caught:
        await calls.complete(CODEC, path_dep, calls.ask("hi"))
    assert caught.value.status == 401 and "no AWS credentials" in caught.value.detail
    # A Bedrock API key from the environment: a bearer token, no signature.
    aws_env.setenv("AWS_BEARER_TOKEN_BEDROCK", BEARER_TOKEN)
    assert (await calls.complete(CODEC, path_dep, calls.ask("bearer"))).stop.kind is Stop.END
    assert server.seen[-1].headers["authorization"] == f"Bearer {BEARER_TOKEN}"


async def test_probe(tmp_path: Path, fake: tuple[FakeBedrock, str]) -> None:
    ok = await probe(deployment(tmp_path, fake[1], "echo"))
    assert (ok.ok, ok.verdict, ok.healthy) == (True, "ok", True)
