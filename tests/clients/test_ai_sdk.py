"""The Vercel AI SDK (`ai` + `@ai-sdk/openai`), unmodified, through Forebay.

How it works: tests/js/ai_sdk_tool.mjs is a small app: `createOpenAI({baseURL,
apiKey})` pointed at Forebay with a tenant key, one tool (`lookup_word`, whose
result is a random word the test picks), and `generateText` or `streamText`
with a step limit, so the SDK runs the tool loop itself. The packages come
from tests/js/package-lock.json (exact versions, installed once by `npm ci`,
tests/support/node.py). The loopback Chat upstream's `scripted` model
(tests/support/scripted.py) calls the tool first, then answers by quoting the
tool's result, so the script's answer holds the word only if the SDK ran the
tool and sent its result back through Forebay.

`openai.chat(model)` speaks Chat Completions; `openai(model)`, the provider's
default, speaks the Responses API (translated here to the Chat upstream).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support.node import JS_DIR, node, node_modules
from tests.support.openai_server import FakeUpstream
from tests.support.scripted import ToolScript
from tests.support.servers import ServerThread

UPSTREAM_KEY = "sk-chat-upstream-secret-0123456789"
SCRIPT = ToolScript("lookup_word", {"key": "note"}, reply="The word is:")


@pytest.fixture
def chat() -> Iterator[tuple[FakeUpstream, ServerThread]]:
    fake = FakeUpstream(script=SCRIPT)
    with ServerThread(fake.app()) as thread:
        yield fake, thread


@pytest.fixture
def gw(make_gateway: GatewayFactory, chat: tuple[FakeUpstream, ServerThread]) -> Gateway:
    return make_gateway(
        f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
      helper:
        deployments:
          - {{name: chat-helper, base_url: '{chat[1].url}/v1', model: scripted,
              api_key: '{UPSTREAM_KEY}'}}
    """
    )


def run_app(gw: Gateway, *, api: str, call: str, word: str, key: str | None = None) -> Any:
    node_modules()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(gw.data_dir),
        "FOREBAY_BASE_URL": gw.base_url,
        "FOREBAY_KEY": key or gw.tenant_key,
        "MODEL": "helper",
        "API": api,
        "CALL": call,
        "SECRET_WORD": word,
    }
    done = subprocess.run(
        [node(), str(JS_DIR / "ai_sdk_tool.mjs")],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        out = json.loads(done.stdout)
    except json.JSONDecodeError:
        out = {"unparsed": done.stdout}
    return done.returncode, out, done.stderr


def _assert_tool_loop(gw: Gateway, chat: FakeUpstream, out: Any, word: str, protocol: str) -> None:
    assert out["ran"] == ["note"], out  # the SDK ran the tool once, with the model's argument
    assert word in out["text"] and out["text"].startswith(SCRIPT.reply), out
    assert out["steps"] == 2 and out["finishReason"] == "stop", out
    assert out["usage"]["inputTokens"] > 0 and out["usage"]["outputTokens"] > 0, out
    seen = [s for s in chat.seen if s.path == "/v1/chat/completions"]
    assert len(seen) == 2, [s.body for s in seen]
    first, second = (s.body for s in seen)
    (offered,) = first["tools"]
    assert offered["function"]["name"] == "lookup_word"
    assert "key" in offered["function"]["parameters"]["properties"]
    answered = second["messages"][-1]
    assert answered["role"] == "tool" and answered["tool_call_id"] == SCRIPT.call_id("call_")
    assert word in json.dumps(answered["content"])
    for s in seen:
        assert s.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    rows = gw.wait_rows(2)
    assert len(rows) == 2, rows
    for row in rows:
        shown = json.dumps(row, default=str)
        assert row["protocol"] == protocol and row["alias"] == "helper", shown
        assert row["status"] == 200 and row["deployment"] == "chat-helper", shown
        assert int(row["prompt_tokens"]) > 0, shown  # type: ignore[call-overload]


@pytest.mark.parametrize("call", ["generate", "stream"])
def test_ai_sdk_chat_model_runs_a_tool_loop_through_forebay(
    gw: Gateway, chat: tuple[FakeUpstream, ServerThread], call: str
) -> None:
    word = f"heron-{secrets.token_hex(6)}"
    code, out, stderr = run_app(gw, api="chat", call=call, word=word)
    assert code == 0, (out, stderr)
    _assert_tool_loop(gw, chat[0], out, word, "openai_chat")
    if call == "stream":
        assert out["streamed"] == out["text"], out
        assert all(s.body["stream"] is True for s in chat[0].seen)
        assert all(s.body["stream_options"] == {"include_usage": True} for s in chat[0].seen)


def test_ai_sdk_with_a_wrong_key_gets_forebays_401(
    gw: Gateway, chat: tuple[FakeUpstream, ServerThread]
) -> None:
    key = "sk-fb-not-a-key-0123456789abcdef0123456789abcdef"
    code, out, stderr = run_app(gw, api="chat", call="generate", word="unused", key=key)
    assert code == 1, (out, stderr)
    assert out["error"]["statusCode"] == 401, out
    assert out["ran"] == []
    assert chat[0].seen == []


@pytest.mark.parametrize("call", ["generate", "stream"])
def test_ai_sdk_default_model_runs_a_tool_loop_over_responses(
    gw: Gateway, chat: tuple[FakeUpstream, ServerThread], call: str
) -> None:
    word = f"egret-{secrets.token_hex(6)}"
    code, out, stderr = run_app(gw, api="default", call=call, word=word)
    assert code == 0, (out, stderr)
    _assert_tool_loop(gw, chat[0], out, word, "openai_responses")
