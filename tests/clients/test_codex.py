"""Codex (`@openai/codex`), unmodified, through Forebay on loopback.

How it works: `npm ci` installs @openai/codex (an exact version, from
tests/js/package-lock.json; its platform package holds the native binary) once
(tests/support/node.py). Each test starts a Forebay gateway in-process and a
loopback upstream whose `scripted` model answers as a model would
(tests/support/scripted.py): the first request, which offers Codex's
`exec_command` function tool, gets a call running `cat` on a file in the
test's temp dir; the request carrying the command's output gets text that
quotes it. Codex runs as `codex exec` (non-interactive, --json events on
stdout) with a temp CODEX_HOME whose config.toml names Forebay as its model
provider (base_url Forebay's /v1, the tenant key from an env variable,
wire_api "responses") and a Forebay alias as its model, with no approvals and
no sandbox (the test's temp dir is the only thing the command touches), so its
answer quotes a random word that only the file holds: the whole round trip
(stream in, command run, output back, stream in) went through.

Codex must reach nothing else: analytics, feedback, OpenTelemetry export and
the update check are switched off in its config, HOME is the temp dir, and
every proxy variable points at an egress trap (tests/support/egress_trap.py)
that refuses and records whatever would have gone to the internet: each test
asserts it recorded nothing.

Two upstreams: the loopback OpenAI server speaking Responses natively
(Codex's requests are stateless, `store: false`, so Forebay relays the bytes)
and an OpenAI-compatible Chat server (Forebay translates Responses to Chat and
the Chat stream back to Responses events; the web_search tool Codex offers by
default, which only OpenAI can run, is dropped, or refused with a 400 on an
alias set to `hosted_tools: refuse`). What this shares with the Claude Code
tests (workspace, gateway config, egress trap, the run, the Chat and ledger
checks) is in tests/support/cli_clients.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support import cli_clients
from tests.support.cli_clients import Workspace
from tests.support.egress_trap import EgressTrap
from tests.support.node import codex_entry
from tests.support.openai_api_server import API_KEY, OpenAIServer
from tests.support.openai_server import FakeUpstream
from tests.support.scripted import ToolScript
from tests.support.servers import ServerThread

KEY_VARIABLE = "FOREBAY_TENANT_KEY"
PROMPT = "What is the secret word in note.txt? Run `cat note.txt`, then tell me."
RUN_TIMEOUT_S = 90  # a run takes a few seconds; this only stops a hung one


@dataclass
class Run:
    code: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [
            e["item"]
            for e in self.events
            if e.get("type") == "item.completed" and e.get("item", {}).get("type") == kind
        ]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return cli_clients.make_workspace(
        tmp_path,
        "heron",
        lambda _note: ToolScript("exec_command", {"cmd": "cat note.txt"}, reply=cli_clients.REPLY),
    )


@pytest.fixture
def native(workspace: Workspace) -> Iterator[tuple[OpenAIServer, ServerThread]]:
    with cli_clients.serve(OpenAIServer(script=workspace.script)) as served:
        yield served


@pytest.fixture
def gw(
    make_gateway: GatewayFactory,
    native: tuple[OpenAIServer, ServerThread],
    chat: tuple[FakeUpstream, ServerThread],
) -> Gateway:
    return make_gateway(
        cli_clients.gateway_config(
            f"""
      coder:
        deployments:
          - {{name: openai-coder, provider: openai, base_url: '{native[1].url}/v1',
              model: scripted, api_key: '{API_KEY}'}}
      coder-chat:
        deployments: [{cli_clients.chat_deployment("chat-coder", chat[1])}]
      coder-chat-strict:
        hosted_tools: refuse
        deployments: [{cli_clients.chat_deployment("chat-coder-strict", chat[1])}]"""
        )
    )


def codex_home(
    home: Path, base_url: str, alias: str, *, extra: str = "", plugins: bool = False
) -> Path:
    """A CODEX_HOME whose config.toml makes Forebay Codex's only model provider."""
    codex = home / ".codex"
    codex.mkdir(parents=True)
    (codex / "config.toml").write_text(
        f"""
model = "{alias}"
model_provider = "forebay"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
{extra}
[model_providers.forebay]
name = "Forebay"
base_url = "{base_url}/v1"
env_key = "{KEY_VARIABLE}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[features]
# Plugins sync a marketplace from github.com, api.github.com and chatgpt.com
# at start-up (the egress trap test below shows it).
plugins = {"true" if plugins else "false"}

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
"""
    )
    return codex


def codex_env(home: Path, codex: Path, key: str, trap: EgressTrap) -> dict[str, str]:
    """Everything Codex reads from its environment, and nothing of ours."""
    return {**cli_clients.base_env(home, trap), "CODEX_HOME": str(codex), KEY_VARIABLE: key}


def run_codex(env: dict[str, str], cwd: Path) -> Run:
    argv = [
        *codex_entry(),
        "exec",
        "--json",
        "--strict-config",  # a config key this version does not know fails the run
        "--skip-git-repo-check",
        "--ephemeral",
        "--color",
        "never",
        PROMPT,
    ]
    done = cli_clients.run(argv, env, cwd, RUN_TIMEOUT_S)
    events = []
    for line in done.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return Run(done.returncode, events, done.stdout, done.stderr)


def _assert_answered(run: Run, ws: Workspace) -> None:
    shown = run.stdout + run.stderr
    assert run.code == 0, shown
    (command,) = run.items("command_execution")
    assert "cat note.txt" in command["command"] and command["exit_code"] == 0, shown
    assert ws.word in command["aggregated_output"], shown
    # The word is random and only the file holds it: the upstream quoted the
    # function_call_output Codex sent after running the command.
    (message,) = run.items("agent_message")
    assert message["text"].startswith(ws.script.reply) and ws.word in message["text"], shown


def _assert_ledger(gw: Gateway, alias: str, deployment: str, count: int) -> None:
    cli_clients.assert_ledger(
        gw,
        protocol="openai_responses",
        endpoint="responses",
        alias=alias,
        deployment=deployment,
        count=count,
    )


def _output_of(body: dict[str, Any], kind: str, call_id: str) -> dict[str, Any]:
    (item,) = [
        i
        for i in body["input"]
        if isinstance(i, dict) and i.get("type") == kind and i.get("call_id") == call_id
    ]
    return item


def test_codex_runs_a_command_through_forebay_to_openai_responses(
    gw: Gateway,
    native: tuple[OpenAIServer, ServerThread],
    workspace: Workspace,
    trap: EgressTrap,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    codex = codex_home(home, gw.url, "coder")
    run = run_codex(codex_env(home, codex, gw.tenant_key, trap), workspace.root)
    _assert_answered(run, workspace)
    assert trap.attempts == []

    seen = cli_clients.posts(native[0].seen, "/v1/responses")
    assert len(seen) == 2, [s.body for s in seen]
    first, second = (s.body for s in seen)
    # Same protocol both ends and stateless (store: false): Codex's body reached
    # OpenAI as it came, its hosted and namespace tools, include and
    # prompt_cache_key with it; only the model is the deployment's.
    assert first["model"] == "scripted" and first["stream"] is True
    assert first["store"] is False
    assert "reasoning.encrypted_content" in first["include"]
    assert first["prompt_cache_key"]
    kinds = {t["type"] for t in first["tools"]}
    assert {"function", "namespace", "web_search"} <= kinds, kinds
    assert "exec_command" in [t.get("name") for t in first["tools"]]
    for s in seen:  # Forebay's upstream key went out, never the tenant's
        assert s.headers["authorization"] == f"Bearer {API_KEY}"
        assert gw.tenant_key not in s.raw.decode()
    call_id = workspace.script.call_id("call_")
    call = _output_of(second, "function_call", call_id)
    assert json.loads(call["arguments"]) == workspace.script.arguments
    result = _output_of(second, "function_call_output", call_id)
    assert workspace.word in json.dumps(result["output"])
    _assert_ledger(gw, "coder", "openai-coder", 2)


def test_codex_runs_a_command_through_forebay_to_a_chat_upstream(
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
    workspace: Workspace,
    trap: EgressTrap,
    tmp_path: Path,
) -> None:
    """Translated: Responses in, Chat out, Codex unmodified. Codex's sub-agent
    tools (a `namespace` of functions) become Chat functions; its web_search
    tool, which only OpenAI can run and Codex does not force, is dropped (the
    ledger's route reason says so; a `hosted_tools: refuse` alias refuses it,
    see the next test)."""
    home = tmp_path / "home"
    codex = codex_home(home, gw.url, "coder-chat")
    run = run_codex(codex_env(home, codex, gw.tenant_key, trap), workspace.root)
    _assert_answered(run, workspace)
    assert trap.attempts == []

    offered = cli_clients.assert_chat_round_trip(chat[0], workspace, gw)
    assert "cmd" in offered["exec_command"]["parameters"]["properties"], offered
    assert "spawn_agent" in offered  # from inside Codex's namespace tool
    _assert_ledger(gw, "coder-chat", "chat-coder", 2)
    for row in gw.wait_rows(2):
        assert "dropped hosted tools web_search" in str(row["route_reason"]), row


def test_codex_gets_a_clear_400_from_an_alias_that_refuses_hosted_tools(
    gw: Gateway,
    chat: tuple[FakeUpstream, ServerThread],
    workspace: Workspace,
    trap: EgressTrap,
    tmp_path: Path,
) -> None:
    """`hosted_tools: refuse`: the web_search tool Codex offers is a 400 naming
    the alias, not silently dropped; a user who wants it so sets Codex's
    `web_search = "disabled"`."""
    home = tmp_path / "home"
    codex = codex_home(home, gw.url, "coder-chat-strict")
    run = run_codex(codex_env(home, codex, gw.tenant_key, trap), workspace.root)
    assert run.code != 0, run.stdout
    (failed,) = [e for e in run.events if e.get("type") == "turn.failed"]
    message = failed["error"]["message"]
    assert "web_search tool" in message and "not_translatable" in message, message
    assert "coder-chat-strict" in message and "refuse" in message, message
    assert "namespace" not in message  # its namespace of functions was carried
    assert cli_clients.posts(chat[0].seen, "/v1/chat/completions") == []
    assert workspace.word not in run.stdout
    assert trap.attempts == []


def test_codex_with_a_wrong_key_fails_and_reaches_no_upstream(
    gw: Gateway,
    native: tuple[OpenAIServer, ServerThread],
    workspace: Workspace,
    trap: EgressTrap,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    codex = codex_home(home, gw.url, "coder")
    run = run_codex(codex_env(home, codex, cli_clients.WRONG_KEY, trap), workspace.root)
    assert run.code != 0, run.stdout
    assert any(e.get("type") == "turn.failed" for e in run.events), run.stdout
    assert run.items("command_execution") == []
    assert workspace.word not in run.stdout
    assert cli_clients.posts(native[0].seen, "/v1/responses") == []
    assert trap.attempts == []


def test_the_egress_trap_catches_codex_going_to_the_internet(
    gw: Gateway, workspace: Workspace, trap: EgressTrap, tmp_path: Path
) -> None:
    """With plugins on, Codex syncs their marketplace from the internet at
    start-up: the trap must see it, or the empty `attempts` the other tests
    assert would prove nothing."""
    # The sync runs beside the task, and a quick task can end Codex before the sync
    # starts (seen once in a full CI run): up to three runs, each in a new home.
    for attempt in range(3):
        home = tmp_path / f"home-{attempt}"
        codex = codex_home(home, gw.url, "coder", plugins=True)
        run_codex(codex_env(home, codex, gw.tenant_key, trap), workspace.root)
        if any(a.startswith("CONNECT github.com:443 ") for a in trap.attempts):
            break
    assert any(a.startswith("CONNECT github.com:443 ") for a in trap.attempts), trap.attempts
