"""Claude Code, unmodified, through Forebay on loopback.

How it works: `npm ci` installs @anthropic-ai/claude-code (an exact version,
from tests/js/package-lock.json) into tests/js/node_modules once
(tests/support/node.py). Each test starts a Forebay gateway in-process and a
loopback upstream whose `scripted` model answers as a model would
(tests/support/scripted.py): the first request, which offers Claude Code's Read
tool, gets a tool_use reading a file in the test's temp dir; the request
carrying the tool_result gets text that quotes the result. Claude Code runs as
`claude -p` (non-interactive) with ANTHROPIC_BASE_URL at Forebay and a tenant
key, so its answer quotes a random word that only the file holds: the whole
round trip (stream in, tool run, result back, stream in) went through.

Claude Code must reach nothing else. Its switches for that are set
(CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, DISABLE_TELEMETRY,
DISABLE_AUTOUPDATER, DISABLE_ERROR_REPORTING, every model alias variable naming
a Forebay alias, HOME in the temp dir so no user settings or login are read),
and every proxy variable points at an egress trap (tests/support/egress_trap.py)
that refuses and records whatever would have gone to the internet: each test
asserts it recorded nothing.

Two upstreams: the loopback Anthropic server (the same protocol both sides, so
Forebay relays the bytes) and an OpenAI-compatible Chat server (Forebay
translates Messages to Chat and the Chat stream back to Messages events).
What this shares with the Codex tests (workspace, gateway config, egress trap,
the run, the Chat and ledger checks) is in tests/support/cli_clients.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support import cli_clients
from tests.support.anthropic_server import API_KEY, AnthropicServer
from tests.support.cli_clients import Workspace
from tests.support.egress_trap import EgressTrap
from tests.support.node import claude_binary
from tests.support.openai_server import FakeUpstream
from tests.support.scripted import ToolScript
from tests.support.servers import ServerThread

PROMPT = "What is the secret word in note.txt? Read the file, then tell me."
RUN_TIMEOUT_S = 60  # a run takes about a second; this only stops a hung one


@dataclass
class Run:
    code: int
    result: dict[str, Any]
    stderr: str


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return cli_clients.make_workspace(
        tmp_path,
        "pelican",
        lambda note: ToolScript("Read", {"file_path": str(note)}, reply=cli_clients.REPLY),
    )


@pytest.fixture
def ant(workspace: Workspace) -> Iterator[tuple[AnthropicServer, ServerThread]]:
    with cli_clients.serve(AnthropicServer(script=workspace.script)) as served:
        yield served


@pytest.fixture
def gw(
    make_gateway: GatewayFactory,
    ant: tuple[AnthropicServer, ServerThread],
    chat: tuple[FakeUpstream, ServerThread],
) -> Gateway:
    def native(alias: str) -> str:
        return (
            f"{{name: ant-{alias}, provider: anthropic, base_url: '{ant[1].url}', "
            f"model: scripted, api_key: '{API_KEY}'}}"
        )

    def translated(alias: str) -> str:
        return cli_clients.chat_deployment(f"chat-{alias}", chat[1])

    return make_gateway(
        cli_clients.gateway_config(
            f"""
      coder: {{deployments: [{native("coder")}]}}
      claude-sonnet-4-5: {{deployments: [{native("claude-sonnet-4-5")}]}}
      coder-chat: {{deployments: [{translated("coder-chat")}]}}
      claude-haiku-4-5: {{deployments: [{translated("claude-haiku-4-5")}]}}"""
        )
    )


def claude_env(home: Path, base_url: str, alias: str, trap: EgressTrap) -> dict[str, str]:
    """Everything Claude Code reads from its environment, and nothing of ours."""
    models = (
        "ANTHROPIC_MODEL",
        "ANTHROPIC_SMALL_FAST_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "CLAUDE_CODE_SUBAGENT_MODEL",
    )
    quiet = (
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
        "DISABLE_ERROR_REPORTING",
        "DISABLE_BUG_COMMAND",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE",
    )
    return {
        **cli_clients.base_env(home, trap),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url,
        **{name: alias for name in models},
        **{name: "1" for name in quiet},
        "CLAUDE_CODE_MAX_RETRIES": "0",  # a failure shows at once, not after backoff
    }


def run_claude(env: dict[str, str], cwd: Path) -> Run:
    argv = [
        str(claude_binary()),
        "-p",
        PROMPT,
        "--output-format",
        "json",
        "--tools",
        "Read",
        "--allowedTools",
        "Read",
        "--max-turns",
        "4",
    ]
    done = cli_clients.run(argv, env, cwd, RUN_TIMEOUT_S)
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        result = {"unparsed stdout": done.stdout}
    return Run(done.returncode, result, done.stderr)


def _assert_answered(run: Run, ws: Workspace) -> None:
    assert run.code == 0, json.dumps(run.result) + run.stderr
    assert run.result.get("is_error") is False, run.result
    assert run.result.get("subtype") == "success", run.result
    assert run.result.get("num_turns") == 2, run.result
    # The word is random and only the file holds it: the upstream quoted the
    # tool_result that Claude Code sent after running Read.
    assert ws.word in str(run.result.get("result")), run.result
    assert str(run.result["result"]).startswith(ws.script.reply), run.result


def _assert_ledger(gw: Gateway, alias: str, deployment: str, count: int) -> None:
    cli_clients.assert_ledger(
        gw,
        protocol="anthropic_messages",
        endpoint="messages",
        alias=alias,
        deployment=deployment,
        count=count,
    )


# Claude Code shapes its requests by the model name: for one it does not know
# (most Forebay aliases) it assumes the newest API (adaptive thinking, effort, a
# mid-conversation system message); for a Claude model's name (an alias named
# after one) it sends that model's shape (thinking with a token budget).
@pytest.mark.parametrize("alias", ["coder", "claude-sonnet-4-5"])
def test_claude_code_reads_a_file_through_forebay_to_anthropic(
    alias: str,
    gw: Gateway,
    ant: tuple[AnthropicServer, ServerThread],
    workspace: Workspace,
    trap: EgressTrap,
    tmp_path: Path,
) -> None:
    env = claude_env(tmp_path / "home", gw.url, alias, trap)
    env["ANTHROPIC_API_KEY"] = gw.tenant_key  # sent as x-api-key
    run = run_claude(env, workspace.root)
    _assert_answered(run, workspace)
    assert trap.attempts == []

    seen = cli_clients.posts(ant[0].seen, "/v1/messages")
    assert len(seen) == 2, [s.body for s in seen]
    first, second = (s.body for s in seen)
    assert "Read" in [t["name"] for t in first["tools"]]  # with a placeholder of its own
    assert first["stream"] is True and first["model"] == "scripted"
    if alias == "coder":
        # Its mid-conversation system message reached Anthropic in place: same
        # protocol, the body relayed as it came.
        assert "system" in [m["role"] for m in first["messages"]]
        assert first["thinking"]["type"] == "adaptive"
    else:
        assert first["thinking"]["type"] == "enabled"
    for s in seen:  # Forebay's upstream key went out, never the tenant's
        assert s.headers["x-api-key"] == API_KEY
        assert gw.tenant_key not in s.raw.decode()
        assert "claude-code-20250219" in s.headers.get("anthropic-beta", "")
    call = second["messages"][-2]["content"][-1]
    assert call["type"] == "tool_use" and call["input"] == {"file_path": str(workspace.note)}
    result = second["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call["id"]
    assert workspace.word in json.dumps(result["content"])
    _assert_ledger(gw, alias, f"ant-{alias}", 2)
    # Claude Code marks its prompt for caching; Forebay metered the cache writes
    # the Anthropic upstream reported.
    assert all(int(r["cache_write_tokens"]) > 0 for r in gw.ledger_rows())  # type: ignore[call-overload]


@pytest.mark.parametrize("alias", ["coder-chat", "claude-haiku-4-5"])
def test_claude_code_reads_a_file_through_forebay_to_a_chat_upstream(
    alias: str,
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
    workspace: Workspace,
    trap: EgressTrap,
    tmp_path: Path,
) -> None:
    env = claude_env(tmp_path / "home", gw.url, alias, trap)
    env["ANTHROPIC_AUTH_TOKEN"] = gw.tenant_key  # sent as Authorization: Bearer
    run = run_claude(env, workspace.root)
    _assert_answered(run, workspace)
    assert trap.attempts == []

    offered = cli_clients.assert_chat_round_trip(chat[0], workspace, gw)
    schema = offered["Read"]["parameters"]  # its input_schema, as Chat parameters
    assert "file_path" in schema["properties"], schema
    _assert_ledger(gw, alias, f"chat-{alias}", 2)


def test_claude_code_with_a_wrong_key_fails_and_reaches_no_upstream(
    gw: Gateway,
    ant: tuple[AnthropicServer, ServerThread],
    workspace: Workspace,
    trap: EgressTrap,
    tmp_path: Path,
) -> None:
    env = claude_env(tmp_path / "home", gw.url, "coder", trap)
    env["ANTHROPIC_API_KEY"] = cli_clients.WRONG_KEY
    run = run_claude(env, workspace.root)
    assert run.code != 0, run.result
    assert run.result.get("is_error") is True, run.result
    assert workspace.word not in json.dumps(run.result)
    assert [s.path for s in ant[0].seen if s.method == "POST"] == []
    assert trap.attempts == []


def test_the_egress_trap_catches_claude_code_going_to_the_internet(
    trap: EgressTrap, workspace: Workspace, tmp_path: Path
) -> None:
    """Without a base URL Claude Code goes to api.anthropic.com: the trap must see
    it, or the empty `attempts` the other tests assert would prove nothing. (It
    retries a refused tunnel for a while; the first attempt is enough.)"""
    env = claude_env(tmp_path / "home", "", "coder", trap)
    del env["ANTHROPIC_BASE_URL"]
    env["ANTHROPIC_API_KEY"] = "sk-ant-api03-not-a-real-key"
    argv = [str(claude_binary()), "-p", PROMPT, "--output-format", "json"]
    proc = subprocess.Popen(
        argv,
        cwd=workspace.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not trap.attempts and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert trap.attempts, "Claude Code reached the internet without the proxy, or never tried"
    assert trap.attempts[0].startswith("CONNECT api.anthropic.com:443 "), trap.attempts
