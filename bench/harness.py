"""Shared pieces for benchmarks: the zero-delay upstream (bench/zero_upstream.py)
as a subprocess, a `forebay serve` subprocess, a simulated fleet, and a
closed-loop load generator. Everything runs
on loopback and stops by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
FOREBAY = [sys.executable, "-m", "forebay"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def zero_upstream() -> Proc:
    port = free_port()
    # The same upstream bench/overhead.py measures against: pre-built answers.
    script = ROOT / "bench" / "zero_upstream.py"
    proc = subprocess.Popen([sys.executable, str(script), "--port", str(port)])
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Proc(proc, port)
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("zero upstream did not start")


def forebay_serve(config: Path, data_dir: Path, env: dict[str, str], log: Path) -> Proc:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                *FOREBAY,
                "serve",
                "--config",
                str(config),
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    p = Proc(proc, port)
    wait_http(f"{p.url}/readyz")
    return p


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


async def _load(url: str, key: str, concurrency: int, seconds: float, stream: bool) -> Result:
    body = b'{"model":"bench","messages":[{"role":"user","content":"hi"}]' + (
        b',"stream":true}' if stream else b"}"
    )
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def once() -> None:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()

        # Warm the connection pool first, outside the measurement.
        await asyncio.gather(*(once() for _ in range(concurrency)))
        end = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(len(latencies), elapsed, latencies, errors)


def load(url: str, key: str, concurrency: int, seconds: float, *, stream: bool = False) -> Result:
    """Closed loop: `concurrency` clients, each sending its next request on the last answer."""
    try:
        import uvloop

        return uvloop.run(_load(url, key, concurrency, seconds, stream))
    except ImportError:
        return asyncio.run(_load(url, key, concurrency, seconds, stream))


def sim_fleet(servers: int, *options: str) -> tuple[subprocess.Popen[bytes], list[str]]:
    """`forebay sim --servers N` on consecutive free ports; its base URLs once healthy."""
    import socket

    def busy(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    port = free_port()
    while any(busy(port + i) for i in range(servers)):
        port = free_port()
    proc = subprocess.Popen(
        [*FOREBAY, "sim", "--servers", str(servers), "--base-port", str(port), *options],
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    urls = [f"http://127.0.0.1:{port + i}" for i in range(servers)]
    for url in urls:
        wait_http(f"{url}/health")
    return proc, urls
