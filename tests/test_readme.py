"""Every command in README.md works when run in order, as written.

The conventions (also in a comment at the top of README.md), so that editing the
README needs no edit here unless it brings a new kind of command:

* ```bash and ```python blocks run, in order; other blocks (yaml, ...) never do,
  and neither does a block right after a `<!-- readme-test: skip (why) -->` line.
* A bash block is split into commands (a line, with its `\\` continuations and
  open quotes); each runs in `bash` in one shared environment, so `export`s
  carry over, from a temporary directory that links the checkout's top-level
  files and its .venv, with a fresh HOME (where a .curlrc makes curl fail on an
  HTTP error, as a person would notice one).
* Long-running commands (`scripts/serve`, `forebay serve`, `forebay sim`) start
  in the background and are waited for until they answer; the next one of the
  same kind replaces it (as Ctrl-C and a restart would); all stop at the end.
* Placeholders: `sk-fb-...` is the tenant key the first start printed (or wrote
  to a file it named); `key_...` is the last key id a command printed; ports
  8080 (the gateway) and 8100 (the simulated fleet) become free ports.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

pytestmark = pytest.mark.local_model

ROOT = Path(__file__).parents[1]
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\b")
FENCE = re.compile(r"^```(\S*)")
KEY = re.compile(r"sk-fb-[A-Za-z0-9_-]{20,}")
KEY_ID = re.compile(r"\bkey_[0-9a-f]{16}\b")
LONG_RUNNING = {
    "serve": re.compile(r"(scripts/serve|forebay serve)\b"),
    "sim": re.compile(r"forebay sim\b"),
}
COMMAND_TIMEOUT_S = 120
READY_TIMEOUT_S = 120


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each block that runs, in order."""
    found: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in ("bash", "python") and not SKIP.search(before):
            found.append((fence.group(1), "\n".join(lines[i + 1 : end])))
        i = end + 1
    return found


def shell_commands(code: str) -> list[str]:
    commands: list[str] = []
    pending = ""
    for line in code.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.rstrip().endswith("\\"):
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            commands.append(pending)
        pending = ""
    assert not pending, f"unfinished command in README: {pending!r}"
    return commands


@dataclass
class Background:
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Session:
    """The shell a person would have open: one directory, one environment."""

    workdir: Path
    env: dict[str, str]
    gateway_port: int
    sim_port: int
    seen: list[str] = field(default_factory=list)  # everything the commands printed
    running: dict[str, Background] = field(default_factory=dict)

    def substitute(self, text: str) -> str:
        text = re.sub(r"\b8080\b", str(self.gateway_port), text)
        text = re.sub(r"\b8100\b", str(self.sim_port), text)
        if "sk-fb-..." in text:
            text = text.replace("sk-fb-...", self.first_start_key())
        if "key_..." in text:
            ids = KEY_ID.findall(self.output())
            assert ids, "README uses key_... before any command printed a key id"
            text = text.replace("key_...", ids[-1])
        return text

    def output(self) -> str:
        logs = [b.log.read_text(errors="replace") for b in self.running.values()]
        return "\n".join([*self.seen, *logs])

    def first_start_key(self) -> str:
        """From a printed line that names the tenant, else from a file the output names."""
        output = self.output()
        texts = [output]
        for word in re.findall(r"/[^\s'\"]+", output):
            path = Path(word.rstrip(".,:;)"))
            if path.is_file() and path.stat().st_size < 65536:
                texts.append(path.read_text(errors="replace"))
        for text in texts:
            for line in text.splitlines():
                if "tenant" in line and (key := KEY.search(line)):
                    return key.group(0)
        raise AssertionError("no tenant key was printed (or written to a file it named)")

    def run(self, lang: str, code: str) -> None:
        if lang == "python":
            self._run_once([sys.executable, "-c", self.substitute(code)], code)
            return
        for command in shell_commands(code):
            kind = next((k for k, pat in LONG_RUNNING.items() if pat.search(command)), None)
            if kind is not None:
                self._start(kind, self.substitute(command))
                continue
            env_file = self.workdir / ".readme-env"
            script = f'{self.substitute(command)}\n__rc=$?\nenv -0 > "{env_file}"\nexit $__rc\n'
            self._run_once(["bash", "-c", script], command)
            self.env = dict(
                entry.split("=", 1) for entry in env_file.read_text().split("\0") if "=" in entry
            )

    def _run_once(self, argv: list[str], shown: str) -> None:
        done = subprocess.run(
            argv,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        self.seen += [done.stdout, done.stderr]
        assert done.returncode == 0, (
            f"README command failed ({done.returncode}):\n{shown}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )

    def _start(self, kind: str, command: str) -> None:
        self.stop(kind)
        if kind == "serve" and "--port" not in command:
            command = re.sub(LONG_RUNNING["serve"], rf"\1 --port {self.gateway_port}", command)
        log = self.workdir / f".readme-{kind}-{len(self.seen)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        self.running[kind] = Background(proc, log)
        port = self.gateway_port if kind == "serve" else self.sim_port
        path = "/readyz" if kind == "serve" else "/health"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"{command!r} exited:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{command!r} never answered:\n{log.read_text()}"
            time.sleep(0.1)

    def stop(self, kind: str) -> None:
        bg = self.running.pop(kind, None)
        if bg is None:
            return
        self.seen.append(bg.log.read_text(errors="replace"))
        if bg.proc.poll() is None:
            os.killpg(bg.proc.pid, signal.SIGTERM)
            try:
                bg.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(bg.proc.pid, signal.SIGKILL)
                bg.proc.wait()


def _free_ports(count: int) -> int:
    """The first of `count` consecutive free ports."""
    for _ in range(50):
        base = free_port()
        if base + count < 65536 and all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    for entry in ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name not in ("data", "build", "dist"):
            (workdir / entry.name).symlink_to(entry)
    (workdir / ".venv").symlink_to(Path(sys.prefix))
    home = tmp_path / "home"
    home.mkdir()
    (home / ".curlrc").write_text("fail-with-body\nsilent\nshow-error\nmax-time = 60\n")
    dropped = ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "OPENAI_API_KEY", "COLUMNS")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FOREBAY_", "PYTEST_")) and k not in dropped
    }
    env.update(HOME=str(home), FOREBAY_VENV=sys.prefix)
    shell = Session(workdir, env, gateway_port=free_port(), sim_port=_free_ports(8))
    yield shell
    for kind in list(shell.running):
        shell.stop(kind)


def test_readme_conventions_parse_what_the_readme_holds() -> None:
    text = """
<!-- readme-test: skip (why) -->
```bash
bash scripts/check
```
```yaml
a: 1
```
```bash
export A=1   # note
curl -d '{"x":
  1}' \\
  -H "y"
```
"""
    ((lang, code),) = runnable_blocks(text)
    assert lang == "bash"
    assert shell_commands(code) == [
        "export A=1   # note",
        'curl -d \'{"x":\n  1}\' \\\n  -H "y"',
    ]


def test_every_readme_command_works_in_order(session: Session) -> None:
    blocks = runnable_blocks((ROOT / "README.md").read_text())
    assert any(LONG_RUNNING["serve"].search(code) for _, code in blocks)
    for lang, code in blocks:
        session.run(lang, code)
