"""What the coding-agent CLI tests (tests/clients: Claude Code, Codex) share:
a workspace whose note holds a random word only a tool run can read, the
gateway config around their aliases, an environment that holds nothing of
ours and sends anything bound for the internet to an egress trap, the run of
the CLI itself, and the checks on what reached the Chat upstream and the
ledger. What each client reads from its environment or config, and what its
own output and native upstream look like, stays in its test file."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from starlette.applications import Starlette

from tests.support.egress_trap import EgressTrap
from tests.support.openai_server import FakeUpstream
from tests.support.scripted import ToolScript
from tests.support.servers import ServerThread

if TYPE_CHECKING:
    from tests.conftest import Gateway

UPSTREAM_KEY = "sk-chat-upstream-secret-0123456789"
WRONG_KEY = "sk-fb-not-a-key-0123456789abcdef0123456789abcdef"
REPLY = "The note says:"  # what the scripted model's answer starts with


@dataclass
class Workspace:
    root: Path
    note: Path
    word: str
    script: ToolScript


def make_workspace(tmp_path: Path, prefix: str, script: Callable[[Path], ToolScript]) -> Workspace:
    """A project dir whose note.txt holds a random word; `script` is the tool
    call (given the note's path) the scripted model makes to read it."""
    root = tmp_path / "project"
    root.mkdir()
    word = f"{prefix}-{secrets.token_hex(6)}"
    note = root / "note.txt"
    note.write_text(f"The secret word is {word}.\n")
    return Workspace(root, note, word, script(note))


class _Fake(Protocol):
    def app(self) -> Starlette: ...


F = TypeVar("F", bound=_Fake)


@contextmanager
def serve(fake: F) -> Iterator[tuple[F, ServerThread]]:
    """A loopback fake upstream, served for the test."""
    with ServerThread(fake.app()) as thread:
        yield fake, thread


def chat_deployment(name: str, chat: ServerThread) -> str:
    """A flow mapping for a deployment on the OpenAI-compatible Chat fake."""
    return (
        f"{{name: {name}, base_url: '{chat.url}/v1', model: scripted, api_key: '{UPSTREAM_KEY}'}}"
    )


def gateway_config(models: str) -> str:
    """Forebay's config around `models` (its YAML lines, indented by 6): keys
    refreshed and the ledger flushed fast, so a test sees both at once."""
    return f"""
    key_refresh_s: 0.2
    ledger: {{flush_interval_s: 0.05}}
    models:
{models}
    """


def base_env(home: Path, trap: EgressTrap) -> dict[str, str]:
    """What every CLI gets: PATH, a HOME of its own (no user settings or login),
    a dumb terminal, and every proxy variable at the egress trap."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "TERM": "dumb",
        **trap.env(),
    }


def run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """The CLI run to its end (`timeout_s` only stops a hung one), no stdin,
    its output captured as text."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def posts(seen: list[Any], path: str) -> list[Any]:
    """The requests a fake upstream was sent on `path` (health probes are GETs)."""
    return [s for s in seen if getattr(s, "method", "POST") == "POST" and s.path == path]


def assert_chat_round_trip(chat: FakeUpstream, ws: Workspace, gw: Gateway) -> dict[str, Any]:
    """Two Chat requests reached the Chat upstream, streamed, for the
    deployment's model and with its key (never the tenant's): the first offers
    the script's tool, the second carries the call and its result, which holds
    the word. Returns the first body's offered functions, by name."""
    seen = posts(chat.seen, "/v1/chat/completions")
    assert len(seen) == 2, [s.body for s in seen]
    first, second = (s.body for s in seen)
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert ws.script.tool in offered, offered
    assert first["stream"] is True and first["model"] == "scripted"
    assert first["messages"][0]["role"] == "system"  # the client's instructions, joined
    for s in seen:
        assert s.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert gw.tenant_key not in json.dumps(s.body)
    asked, answered = second["messages"][-2], second["messages"][-1]
    (call,) = asked["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == ws.script.arguments
    assert answered["role"] == "tool" and answered["tool_call_id"] == call["id"]
    assert ws.word in json.dumps(answered["content"])
    return offered


def assert_ledger(
    gw: Gateway, *, protocol: str, endpoint: str, alias: str, deployment: str, count: int
) -> None:
    """`count` rows, each a metered 200 of this alias on this deployment."""
    rows = gw.wait_rows(count)
    assert len(rows) == count, rows
    for row in rows:
        shown = json.dumps(row, default=str)
        assert row["protocol"] == protocol and row["endpoint"] == endpoint, shown
        assert row["alias"] == alias and row["deployment"] == deployment, shown
        assert row["status"] == 200, shown
        assert int(str(row["prompt_tokens"])) > 0, shown
        assert int(str(row["completion_tokens"])) > 0, shown
