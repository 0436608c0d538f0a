"""The JavaScript clients tests/clients drives, installed once into
tests/js/node_modules with `npm ci` from the committed package-lock.json
(exact versions). The install is redone only when the lock file changes (its
hash is kept beside the packages) and is serialised by a file lock, so
parallel test processes share one. Anything missing (node, npm, the registry)
fails the test with the reason: these tests never skip."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE_MODULES = JS_DIR / "node_modules"
_STAMP = NODE_MODULES / ".forebay-lock-sha256"
MIN_NODE = 20


def node() -> str:
    """The node binary, checked to be new enough."""
    path = shutil.which("node")
    if path is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed (Node >= 20): scripts/ensure-services.sh says how")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    major = int(version.stdout.strip().lstrip("v").split(".")[0] or 0)
    if major < MIN_NODE:
        pytest.fail(f"Node >= {MIN_NODE} is needed, found {version.stdout.strip()}")
    return path


def node_modules() -> Path:
    """tests/js/node_modules, installed from the lock file if it is not already."""
    node()
    want = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()
    with (JS_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (_STAMP.exists() and _STAMP.read_text() == want):
            _install()
            _STAMP.write_text(want)
    return NODE_MODULES


def _install() -> None:
    npm = shutil.which("npm") or "npm"
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci in {JS_DIR} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    wrapper = NODE_MODULES / "@anthropic-ai" / "claude-code"
    if not _native(wrapper / "bin" / "claude.exe"):
        # An npm that does not run install scripts leaves a placeholder: put the
        # platform binary in place the way the package's own postinstall does.
        subprocess.run([node(), "install.cjs"], cwd=wrapper, check=False, timeout=120)


def _native(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError:
        return False
    return magic in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def claude_binary() -> Path:
    """Claude Code's native binary, installed by npm from @anthropic-ai/claude-code."""
    path = node_modules() / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
    if not _native(path):
        pytest.fail(f"{path} is not Claude Code's native binary (its postinstall did not run)")
    return path


def codex_entry() -> list[str]:
    """The argv that starts Codex the way npm's `codex` bin does: node running
    @openai/codex's launcher, which execs the platform package's native binary."""
    launcher = node_modules() / "@openai" / "codex" / "bin" / "codex.js"
    if not launcher.exists():
        pytest.fail(f"{launcher} is missing: @openai/codex did not install")
    return [node(), str(launcher)]
