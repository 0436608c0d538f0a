"""Run `forebay` as a real subprocess, the way a user does."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.servers import free_port


def forebay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a one-shot CLI command and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "forebay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


class ServeProcess:
    """`forebay serve` in a subprocess, its output captured to a log file."""

    def __init__(
        self,
        *args: str,
        log: Path,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.port = free_port()
        self.log = log
        self._args = [sys.executable, "-m", "forebay", "serve", "--port", str(self.port), *args]
        # `serve` notes its data dir under XDG_STATE_HOME: keep tests out of the real home.
        state = {"XDG_STATE_HOME": os.environ.get("XDG_STATE_HOME") or str(log.parent / "state")}
        self._env = {**os.environ, **state, **(env or {})}
        self._preexec = preexec  # runs in the child before exec (e.g. to set an rlimit)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServeProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self._args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                preexec_fn=self._preexec,
                start_new_session=True,  # its own process group: kill() leaves nothing behind
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"forebay serve exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"forebay serve was not ready in {timeout}s:\n{self.log.read_text()}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as a process manager would send; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL to `serve` and everything it started (uvicorn's --workers processes
        and local model workers would otherwise outlive the test)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
