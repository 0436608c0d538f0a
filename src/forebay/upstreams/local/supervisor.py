"""Keep an embedded model worker process alive.

The worker is an ordinary OpenAI-compatible server on a loopback port that the
gateway reaches like any other upstream, so a crash in native model code can
never take the gateway's event loop down with it. The supervisor starts the
process, marks it ready once `/health` answers, restarts it with exponential
backoff when it exits or stops answering, and reports `ready=False` meanwhile
(the gateway answers 503 while no deployment of an alias is ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Literal

import aiohttp

log = logging.getLogger("forebay.local")

State = Literal["stopped", "starting", "ready", "restarting"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerSupervisor:
    """One worker process; `start()` returns once it is ready or `startup_timeout_s`
    has passed (the supervisor keeps trying in the background either way)."""

    health_interval_s = 2.0
    health_failures_to_restart = 3
    backoff_initial_s = 0.25
    backoff_max_s = 10.0
    stable_after_s = 30.0  # a worker up this long resets the backoff

    def __init__(
        self,
        name: str,
        module: str,
        args: list[str],
        *,
        port: int = 0,
        log_dir: Path | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self._argv = [
            sys.executable,
            "-m",
            module,
            "--port",
            str(self.port),
            "--parent-pid",
            str(os.getpid()),
            *args,
        ]
        self._log_path = log_dir / f"worker-{name}.log" if log_dir else None
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        self._startup_timeout_s = startup_timeout_s
        self.state: State = "stopped"
        self.restarts = 0
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready_event = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._ready_event = asyncio.Event()
        self._task = asyncio.create_task(self._supervise(), name=f"worker-{self.name}")
        try:
            await asyncio.wait_for(self._ready_event.wait(), self._startup_timeout_s)
        except TimeoutError:
            log.warning(
                "local worker %s not ready after %.0fs; still trying",
                self.name,
                self._startup_timeout_s,
            )

    async def stop(self) -> None:
        self._stop.set()
        await self._terminate()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state = "stopped"

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _supervise(self) -> None:
        backoff = self.backoff_initial_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                self.state = "starting" if self.restarts == 0 else "restarting"
                try:
                    code: int | str | None = await self._run_once(http)
                except OSError as exc:  # cannot spawn or open the log: retry later
                    code = f"not started: {exc}"
                if self._stop.is_set():
                    return
                self.state = "restarting"
                self.restarts += 1
                if time.monotonic() - started > self.stable_after_s:
                    backoff = self.backoff_initial_s
                log.warning(
                    "local worker %s exited (code %s); restart %d in %.2fs",
                    self.name,
                    code,
                    self.restarts,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)

    async def _run_once(self, http: aiohttp.ClientSession) -> int | None:
        """Run the process until it exits (or hangs, then kill it); its exit code."""
        with contextlib.ExitStack() as stack:
            out = (
                stack.enter_context(self._log_path.open("ab"))
                if self._log_path
                else asyncio.subprocess.DEVNULL
            )
            self._proc = proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.pid = proc.pid
        waiter = asyncio.create_task(proc.wait())
        try:
            if await self._await_healthy(http, waiter):
                self.state = "ready"
                self._ready_event.set()
                log.info("local worker %s ready on port %d", self.name, self.port)
                await self._watch(http, waiter)
            if not waiter.done():
                proc.kill()
            return await waiter
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _await_healthy(self, http: aiohttp.ClientSession, waiter: asyncio.Task[int]) -> bool:
        delay = 0.05
        while not waiter.done():
            if await self._healthy(http):
                return True
            await asyncio.wait({waiter}, timeout=delay)
            delay = min(delay * 1.5, 0.5)
        return False

    async def _watch(self, http: aiohttp.ClientSession, waiter: asyncio.Task[int]) -> None:
        """Return when the process exits or has failed several health checks in a row."""
        failures = 0
        while failures < self.health_failures_to_restart:
            done, _ = await asyncio.wait({waiter}, timeout=self.health_interval_s)
            if done:
                self.state = "restarting"
                return
            failures = 0 if await self._healthy(http) else failures + 1
        log.warning("local worker %s stopped answering health checks; killing it", self.name)
        self.state = "restarting"

    async def _healthy(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(f"http://127.0.0.1:{self.port}/health") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


def llama_worker(
    *, name: str, ctx: int, parallel: int, threads: int, port: int = 0, log_dir: Path | None
) -> WorkerSupervisor:
    args = ["--ctx", str(ctx), "--parallel", str(parallel), "--threads", str(threads)]
    return WorkerSupervisor(
        name, "forebay.upstreams.local.llama_worker", args, port=port, log_dir=log_dir
    )


def embed_worker(
    *, name: str, threads: int, parallel: int, port: int = 0, log_dir: Path | None
) -> WorkerSupervisor:
    return WorkerSupervisor(
        name,
        "forebay.upstreams.local.embed_worker",
        ["--threads", str(threads), "--parallel", str(parallel)],
        port=port,
        log_dir=log_dir,
    )
