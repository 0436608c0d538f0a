"""Gemini end to end on loopback: canonical request -> codec -> adapter -> a
Gemini server that speaks the documented wire -> codec -> canonical reply or
events. Usage is checked against hand computation from the server's counts;
a bad key is the deployment's fault. The failures it shares with the other
adapters (each status an UpstreamFailure the gateway's rules read right, a
broken stream a StreamError, a dead port, a foreign endpoint) are GEMINI's
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
from forebay.protocols.canonical import (
    GenRequest,
    Message,
    PartStart,
    Reasoning,
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
from forebay.protocols.gemini import GeminiCodec
from forebay.upstreams.base import WireProtocol
from forebay.upstreams.gemini import GeminiUpstream
from forebay.upstreams.probe import ProbeResult
from forebay.upstreams.registry import remote_upstream
from tests.support.gemini_server import API_KEY, CACHED, SIGNATURE, THOUGHTS, FakeGemini
from tests.support.servers import ServerThread
from tests.upstreams import calls, failure_modes
from tests.upstreams.failure_modes import GEMINI

CODEC = GeminiCodec()
WEATHER = Tool(
    "get_weather", "Weather by city", {"type": "object", "properties": {"city": {"type": "string"}}}
)


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeGemini, str]]:
    server = FakeGemini()
    with ServerThread(server.app()) as thread:
        yield server, thread.url


def deployment(tmp_path: Path, base_url: str, model: str, key: str = "${GEMINI_KEY}") -> Deployment:
    path = tmp_path / "forebay.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            models:
              g:
                deployments:
                  - {{name: gem, provider: gemini, base_url: "{base_url}", model: {model},
                      api_key: "{key}"}}
            """
        )
    )
    settings = load_settings(path, data_dir=tmp_path, environ={"GEMINI_KEY": API_KEY})
    return settings.models["g"].deployments[0]


async def probe(dep: Deployment, timeout_s: float = 2.0) -> ProbeResult:
    up = GeminiUpstream(dep)
    try:
        return await up.probe(timeout_s)
    finally:
        await up.close()


def test_config_defaults_and_adapter(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(
        "models:\n  g:\n    deployments:\n"
        "      - {name: gem, provider: gemini, model: gemini-2.5-flash, api_key: k}\n"
    )
    dep = load_settings(path, data_dir=tmp_path).models["g"].deployments[0]
    assert dep.base_url == "https://generativelanguage.googleapis.com"
    up = remote_upstream(dep)
    assert isinstance(up, GeminiUpstream)
    assert up.wire == frozenset({WireProtocol.GEMINI})
    path.write_text(path.read_text().replace(", api_key: k", ""))
    with pytest.raises(ConfigError, match="needs api_key"):
        load_settings(path, data_dir=tmp_path)


async def test_reply_with_cached_and_reasoning_usage(
    tmp_path: Path, fake: tuple[FakeGemini, str]
) -> None:
    server, url = fake
    dep = deployment(tmp_path, url, "gemini-echo")
    reply = await calls.complete(
        CODEC,
        dep,
        calls.ask("one two three four", reasoning=Reasoning(budget_tokens=64)),
        body_model="x",
    )
    sent = server.seen[-1]
    assert sent.path == "/v1beta/models/gemini-echo:generateContent"
    assert sent.headers["x-goog-api-key"] == API_KEY
    assert "model" not in sent.body  # the deployment's model is in the path only
    assert sent.body["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 64,
        "includeThoughts": True,
    }
    reasoning, text = reply.parts
    assert isinstance(reasoning, ReasoningPart) and isinstance(text, TextPart)
    assert text.text == "one two three four"
    assert reply.stop.kind is Stop.END
    usage = reply.usage
    assert usage is not None
    # Hand computation: prompt 4 words + 50 cached; candidates 4; thoughts 7 outside them.
    assert usage.input_tokens == 4 + CACHED
    assert usage.cache_read_tokens == CACHED
    assert usage.output_tokens == 4 + THOUGHTS
    assert usage.reasoning_tokens == THOUGHTS


async def test_tool_call_round_trip(tmp_path: Path, fake: tuple[FakeGemini, str]) -> None:
    server, url = fake
    dep = deployment(tmp_path, url, "gemini-tool")
    req = calls.ask("weather in Paris?", tools=[WEATHER])
    reply = await calls.complete(CODEC, dep, req)
    call = next(p for p in reply.parts if isinstance(p, ToolCallPart))
    assert (call.name, orjson.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert reply.stop.kind is Stop.TOOL_CALLS and reply.stop.raw == "STOP"
    # Send the call and its result back: the signature rides on the call, the
    # result is named by the function, both in Gemini's turn shape.
    follow = GenRequest(
        model="g",
        messages=[
            *req.messages,
            Message("assistant", list(reply.parts)),
            Message("tool", [ToolResultPart(call.id, [TextPart("18C, clear")])]),
        ],
        tools=[WEATHER],
    )
    await calls.complete(CODEC, deployment(tmp_path, url, "gemini-echo"), follow)
    contents = server.seen[-1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    model_call = next(p for p in contents[1]["parts"] if "functionCall" in p)
    assert model_call["thoughtSignature"] == SIGNATURE
    assert "id" not in model_call["functionCall"]  # Gemini gave no id; ours stays here
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "18C, clear"}}}
    ]


async def test_stream_text_tool_and_usage(tmp_path: Path, fake: tuple[FakeGemini, str]) -> None:
    server, url = fake
    events = await calls.stream(
        CODEC, deployment(tmp_path, url, "gemini-echo"), calls.ask("alpha beta gamma")
    )
    assert server.seen[-1].query == "alt=sse"
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "alpha beta gamma"
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.stop.kind is Stop.END
    assert (
        end.usage is not None
        and end.usage.input_tokens == 3 + CACHED
        and end.usage.output_tokens == 3
    )

    events = await calls.stream(
        CODEC, deployment(tmp_path, url, "gemini-tool"), calls.ask("weather?", tools=[WEATHER])
    )
    starts = [e for e in events if isinstance(e, PartStart)]
    assert [s.kind for s in starts] == ["text", "reasoning", "tool_call"]
    assert starts[2].tool_name == "get_weather" and starts[2].tool_call_id == "call_0_get_weather"
    args = "".join(e.json for e in events if isinstance(e, ToolArgsDelta))
    assert orjson.loads(args) == {"city": "Paris"}
    assert isinstance(events[-1], StreamEnd) and events[-1].stop.kind is Stop.TOOL_CALLS


@pytest.mark.parametrize(
    ("model", "raw"), [("gemini-safety", "SAFETY"), ("gemini-blocked", "PROHIBITED_CONTENT")]
)
async def test_content_filter_stays_distinct(
    tmp_path: Path, fake: tuple[FakeGemini, str], model: str, raw: str
) -> None:
    dep = deployment(tmp_path, fake[1], model)
    reply = await calls.complete(CODEC, dep, calls.ask("something"))
    assert reply.stop.kind is Stop.CONTENT_FILTER and reply.stop.raw == raw
    events = await calls.stream(CODEC, dep, calls.ask("something"))
    assert isinstance(events[-1], StreamEnd)
    assert events[-1].stop.kind is Stop.CONTENT_FILTER and events[-1].stop.raw == raw


@pytest.mark.parametrize("case", GEMINI.cases, ids=str)
async def test_failure_modes(fake: tuple[FakeGemini, str], case: failure_modes.Case) -> None:
    await failure_modes.check(GEMINI, fake[1], case)


@pytest.mark.parametrize("call", ["whole", "stream"])
async def test_unreachable(call: str) -> None:
    await failure_modes.check_unreachable(GEMINI, call)


async def test_embeddings_are_not_a_gemini_endpoint(fake: tuple[FakeGemini, str]) -> None:
    server, url = fake
    await failure_modes.check_foreign_endpoint(GEMINI, url, server.seen)


async def test_bad_key_is_the_deployments_fault(
    tmp_path: Path, fake: tuple[FakeGemini, str]
) -> None:
    dep = deployment(tmp_path, fake[1], "gemini-echo", key="wrong-key")
    with pytest.raises(UpstreamFailure) as caught:
        await calls.complete(CODEC, dep, calls.ask("hi"))
    # Google answers 400 INVALID_ARGUMENT / API_KEY_INVALID: reported as 401, so
    # the gateway tries another deployment instead of blaming the caller.
    assert caught.value.status == 401 and retry_rule(caught.value) is Retry.ELSEWHERE
    result = await probe(dep)
    assert (result.ok, result.verdict, result.healthy) == (False, "bad key", False)


async def test_probe(tmp_path: Path, fake: tuple[FakeGemini, str]) -> None:
    ok = await probe(deployment(tmp_path, fake[1], "gemini-echo"))
    assert (ok.ok, ok.verdict, ok.healthy) == (True, "ok", True)
    missing = await probe(deployment(tmp_path, fake[1], "palm-9"))
    assert (missing.ok, missing.verdict, missing.status) == (False, "model not served", 404)
