"""Hostile clients and faulty upstreams beside normal tenants, and one SIGKILL.

Everything runs on loopback, in bounded phases that stop by themselves:

* upstreams: `bench/zero_upstream.py` (the normal tenants' model), the raw-bytes
  upstream of the tests (`tests/support/raw_upstream.py`: malformed HTTP, torn
  streams, error bodies that echo the credentials they were sent in a dozen
  encodings) and the test upstream's `vision` model (1,000 prompt tokens per image);
* `forebay serve` as a user runs it, with secrets in `api_key` and `headers:`;
* three normal tenants, closed loop, half streaming, from 127.0.0.1;
* attackers from other loopback addresses (127.0.0.2-6, so that the failed-auth
  throttle, which is per address, meets them and not the normal tenants): deep
  JSON, slowloris heads, header floods, never-ending bodies, idle-socket hoards past
  the connection cap, random keys, 50 concurrent image requests against a $0.10
  hard budget, and requests that make the faulty upstream misbehave.

Phases: `baseline` (normal tenants alone), `attack` (everything), `kill` (normal
tenants and the budget and faulty-upstream attackers; half-way through, the gateway
is SIGKILLed and started again on the same port and data dir). Then the run checks
what the issue asks: slots in use after the run, budget overshoot, ledger rows
against the responses served, secrets in any output, peak RSS.

Run from the repository root (about 2 minutes with the defaults):

    .venv/bin/python -m bench.abuse [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.harness import ROOT, free_port, zero_upstream
from tests.support.openai_server import FakeUpstream
from tests.support.raw_upstream import RawUpstream, encodings
from tests.support.servers import ServerThread

ADMIN_KEY = "sk-fb-abuse-admin-" + secrets.token_hex(16)
# Every credential the gateway holds for its upstreams; none may reach a client or a file.
SECRETS = {
    "zero api_key": "sk-zero-" + secrets.token_hex(12),
    "zero x-api-key": "xk-zero-" + secrets.token_hex(12),
    "raw api_key": "sk-raw/" + secrets.token_hex(12),  # a '/' to escape as \\/ in JSON
    "raw api-key": "azure-" + secrets.token_hex(12),
    "vision api_key": "sk-vis-" + secrets.token_hex(12),
}
BUDGET_USD = 0.10
MISBEHAVIOURS = (
    "bad-status-line",
    "long-header",
    "bad-chunk",
    "garbage",
    "close-in-headers",
    "close-in-body",
    "hang-up",
    "not-json",
    "sse-cut",
    "sse-bad-chunk",
    "echo-secrets-400",
    "echo-secrets-500",
    "echo-secrets-200",
    "error-500-llamacpp",
    "error-422-vllm",
)
NORMAL, AUTH, DEEP, RAW, BUDGET, FAULTY = (
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
    "127.0.0.6",
)


def config(zero_port: int, raw: RawUpstream, vision_url: str) -> str:
    s = SECRETS
    return f"""
server:
  max_connections: 400          # small, so the idle-socket hoard passes it
  header_timeout_s: 5
  body_timeout_s: 10
ledger: {{flush_interval_s: 0.1}}
models:
  chat:
    deployments:
      - name: zero
        base_url: http://127.0.0.1:{zero_port}/v1
        model: zero
        api_key: {s["zero api_key"]}
        headers: {{x-api-key: {s["zero x-api-key"]}}}
        price: {{input_per_million: 1.0, output_per_million: 2.0}}
  faulty:
    deployments:
      - name: raw
        base_url: {raw.base_url}
        model: ok
        api_key: {s["raw api_key"]}
        headers: {{api-key: {s["raw api-key"]}}}
        timeout_s: 2
        first_byte_timeout_s: 3
        price: {{input_per_million: 1.0, output_per_million: 2.0}}
  vision:
    deployments:
      - name: vision
        base_url: {vision_url}
        model: vision
        api_key: {s["vision api_key"]}
        price: {{input_per_million: 10.0, output_per_million: 20.0}}
        reserve: {{image_tokens: 2000}}
"""


# --- the gateway process ------------------------------------------------------------------


@dataclass
class Gateway:
    config: Path
    data: Path
    log: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_mb: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start `forebay serve`; seconds until /readyz answers 200."""
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "forebay", "serve", "--config", str(self.config)),
                    *("--data-dir", str(self.data), "--port", str(self.port)),
                    *("--log-level", "warning"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "FOREBAY_ADMIN_KEY": ADMIN_KEY},
                cwd=ROOT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"forebay serve exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.02)
        raise TimeoutError("forebay serve did not get ready")

    def sample_rss(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)

    def cpu_s(self) -> float:
        """utime + stime of the gateway process so far."""
        if self.proc is None:
            return 0.0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sigkill(self) -> None:
        assert self.proc is not None
        self.sample_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_rss()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def admin(gw: Gateway, method: str, path: str, body: object = None) -> Any:
    resp = httpx.request(
        method,
        f"{gw.url}{path}",
        json=body,
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    if resp.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
    return resp.json()


def tenant_key(gw: Gateway, name: str, models: list[str]) -> str:
    admin(gw, "POST", "/admin/tenants", {"name": name})
    return str(admin(gw, "POST", "/admin/keys", {"tenant": name, "models": models})["key"])


# --- what clients saw ----------------------------------------------------------------------


@dataclass
class Seen:
    """Every answer any client got, and every byte of it (to search for secrets)."""

    phase: str = "baseline"
    normal: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # phase -> results
    # request id -> (status, whole answer received, streamed)
    served: dict[str, tuple[int, bool, bool]] = field(default_factory=dict)
    bytes_seen: list[bytes] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    reservation_usd: float = 0.0

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def chat_body(model: str, text: str, stream: bool, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 16,
        **extra,
    }
    if stream:
        body["stream"] = True
    return body


async def post(
    session: aiohttp.ClientSession, url: str, key: str, body: bytes | dict[str, Any], seen: Seen
) -> tuple[int, bytes, str | None]:
    """One request; (status, body, request id). Status 0: the connection failed."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    rid = None
    stream = b'"stream": true' in data
    try:
        async with session.post(url, data=data, headers=headers) as resp:
            rid = resp.headers.get("x-request-id")
            seen.bytes_seen.append(repr(dict(resp.headers)).encode())
            raw = await resp.read()
            seen.bytes_seen.append(raw)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        if rid is not None:
            seen.served[rid] = (0, False, stream)  # started, then cut: the kill
        return 0, b"", rid
    if rid is not None:
        seen.served[rid] = (status, not stream or b"[DONE]" in raw, stream)
    return status, raw, rid


def session_from(addr: str, limit: int = 100) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, local_addr=(addr, 0))
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def until(end: float, work: Callable[[], Awaitable[None]], pause_s: float = 0.0) -> None:
    """`work` again and again until `end`, `pause_s` apart. Attackers pause a little:
    a pure flood measures only that every request costs CPU (per-tenant rpm limits
    bound that; they cannot make it free), not whether one tenant can hurt another."""
    while time.monotonic() < end:
        await work()
        if pause_s:
            await asyncio.sleep(pause_s)


# --- normal tenants --------------------------------------------------------------------------


async def normal_tenants(gw: Gateway, keys: list[str], end: float, seen: Seen, per: int) -> None:
    url = f"{gw.url}/v1/chat/completions"
    async with session_from(NORMAL) as session:

        async def client(key: str, i: int) -> None:
            stream = i % 2 == 1
            body = chat_body("chat", f"hello from client {i}", stream)
            started = time.perf_counter()
            status, raw, _ = await post(session, url, key, body, seen)
            ok = status == 200 and (not stream or b"[DONE]" in raw)
            seen.normal.setdefault(seen.phase, []).append(
                (200 if ok else status, (time.perf_counter() - started) * 1000)
            )
            if status == 0:
                await asyncio.sleep(0.05)  # the gateway is restarting

        await asyncio.gather(
            *(
                until(end, lambda k=k, i=i: client(k, i))  # type: ignore[misc]
                for k in keys
                for i in range(per)
            )
        )


# --- attackers ---------------------------------------------------------------------------


async def raw_connection(
    gw: Gateway, addr: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.port, local_addr=(addr, 0))


async def slowloris(gw: Gateway, end: float, seen: Seen, n: int) -> None:
    """Heads trickled a byte at a time: each must be closed by the header deadline."""

    async def one() -> None:
        with contextlib.suppress(OSError):
            reader, writer = await raw_connection(gw, RAW)
            head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            try:
                while time.monotonic() < end:
                    for byte in head:
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(0.5)
                        if reader.at_eof() or time.monotonic() > end:
                            break
                    if reader.at_eof():
                        seen.count("slowloris closed by the gateway")
                        break
                    head = b"x-pad: " + b"a" * 10 + b"\r\n"
            except OSError:
                seen.count("slowloris closed by the gateway")
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(n)))


async def header_floods(gw: Gateway, end: float, seen: Seen) -> None:
    """One huge header line; thousands of headers: 431 (or a close), never memory."""

    async def once(flood: bytes) -> None:
        try:
            reader, writer = await raw_connection(gw, RAW)
        except OSError:
            return
        try:
            writer.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")
            for _ in range(64):
                writer.write(flood)
                await writer.drain()
            writer.write(b"\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(200), 5)
            seen.bytes_seen.append(answer)
            seen.count("header flood answered " + answer[9:12].decode(errors="replace"))
        except (OSError, TimeoutError):
            seen.count("header flood cut off")
        finally:
            writer.close()

    line = b"x-flood: " + b"a" * 16 * 1024 + b"\r\n"  # 64 x 16 KiB = 1 MiB in one header line
    many = b"".join(b"x-h%d: 1\r\n" % i for i in range(100))  # 6,400 headers
    while time.monotonic() < end:
        await asyncio.gather(once(line.replace(b"\r\n", b"")), once(many))
        await asyncio.sleep(0.2)


async def endless_bodies(gw: Gateway, key: str, end: float, seen: Seen, n: int) -> None:
    """Content-Length 1 MB (under the body limit), sent 100 bytes a second: cut at the
    body deadline."""

    async def one(key: str) -> None:
        try:
            reader, writer = await raw_connection(gw, RAW)
        except OSError:
            return
        try:
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                + f"\r\nauthorization: Bearer {key}\r\ncontent-length: 1000000\r\n\r\n".encode()
            )
            while time.monotonic() < end and not reader.at_eof():
                writer.write(b" " * 100)
                await writer.drain()
                await asyncio.sleep(1.0)
            answer = await asyncio.wait_for(reader.read(300), 2)
            seen.bytes_seen.append(answer)
            seen.count("endless body answered " + answer[9:12].decode(errors="replace"))
        except (OSError, TimeoutError):
            seen.count("endless body cut off")
        finally:
            writer.close()

    await asyncio.gather(*(one(key) for _ in range(n)))


async def idle_hoard(gw: Gateway, end: float, seen: Seen, n: int) -> None:
    """More idle sockets than the connection cap: the oldest make room for others."""
    held: list[asyncio.StreamWriter] = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            _, writer = await raw_connection(gw, RAW)
            held.append(writer)
    seen.counts["idle sockets opened"] = len(held)
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
    for writer in held:
        writer.close()


async def random_keys(gw: Gateway, end: float, seen: Seen) -> None:
    url = f"{gw.url}/v1/chat/completions"
    async with session_from(AUTH) as session:

        async def once() -> None:
            key = "sk-fb-" + secrets.token_urlsafe(32)
            status, _, _ = await post(session, url, key, chat_body("chat", "hi", False), seen)
            seen.count(f"random key answered {status}")

        await asyncio.gather(*(until(end, once, 0.05) for _ in range(4)))


async def deep_json(gw: Gateway, key: str, end: float, seen: Seen) -> None:
    url = f"{gw.url}/v1/chat/completions"
    deep = b"[" * 300 + b"1" + b"]" * 300
    body = json.dumps(chat_body("chat", "hi", False, metadata="DEEP")).encode()
    body = body.replace(b'"DEEP"', deep)
    async with session_from(DEEP) as session:

        async def once() -> None:
            status, _, _ = await post(session, url, key, body, seen)
            seen.count(f"deep JSON answered {status}")

        await asyncio.gather(*(until(end, once, 0.05) for _ in range(2)))


async def image_budget(gw: Gateway, key: str, end: float, seen: Seen) -> None:
    """50 concurrent requests with an image part against a $0.10 hard budget."""
    url = f"{gw.url}/v1/chat/completions"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    content = [{"type": "text", "text": "what is this?"}, image]
    body = {"model": "vision", "messages": [{"role": "user", "content": content}], "max_tokens": 16}
    async with session_from(BUDGET) as session:

        async def once() -> None:
            status, raw, _ = await post(session, url, key, body, seen)
            seen.count(f"image request answered {status}")
            found = re.search(rb"needs up to \$([0-9.e+-]+) more", raw)
            if found:
                seen.reservation_usd = max(seen.reservation_usd, float(found.group(1)))
            if status == 0:
                await asyncio.sleep(0.05)

        await asyncio.gather(*(until(end, once, 0.2) for _ in range(50)))


async def faulty_upstream(gw: Gateway, key: str, end: float, seen: Seen) -> None:
    url = f"{gw.url}/v1/chat/completions"
    async with session_from(FAULTY) as session:

        async def once() -> None:
            how = random.choice(MISBEHAVIOURS)
            body = chat_body("faulty", f"as {how}", random.random() < 0.5)
            status, _, _ = await post(session, url, key, body, seen)
            seen.count(f"faulty upstream answered {status}")
            if status == 0:
                await asyncio.sleep(0.05)

        await asyncio.gather(*(until(end, once, 0.05) for _ in range(6)))


# --- the run ------------------------------------------------------------------------------


def slots_in_use(gw: Gateway) -> tuple[int, float]:
    """(slots held across every deployment, the tenant 'img' concurrency leases)."""
    detail = admin(gw, "GET", "/readyz")
    held = sum(
        int(dep["in_flight"])
        for alias in detail["aliases"].values()
        for dep in alias["deployments"].values()
    )
    leases = admin(gw, "GET", "/admin/limits/tenant/img")["usage"]["concurrent"]["used"]
    return held, float(leases)


def find_secrets(seen: Seen, files: list[Path]) -> list[str]:
    needles = {
        f"{name} ({form})": value.encode()
        for name, secret in SECRETS.items()
        for form, value in encodings(secret).items()
    }
    found = []
    blobs = [(f"response {i}", b) for i, b in enumerate(seen.bytes_seen)]
    blobs += [(str(p), p.read_bytes()) for p in files if p.is_file()]
    for where, blob in blobs:
        for what, needle in needles.items():
            if needle in blob:
                found.append(f"{what} in {where}")
    return found


def ledger_rows(db: Path) -> dict[str, tuple[int, str | None, str | None, float]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT request_id, status, error_type, tenant_id, cost_usd FROM usage_events"
        ).fetchall()
        tenants = dict(conn.execute("SELECT id, name FROM tenants").fetchall())
    return {r[0]: (r[1], r[2], tenants.get(r[3]), r[4]) for r in rows}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="forebay-abuse-"))
    zero = zero_upstream()
    raw = RawUpstream(served=["ok"]).start()
    vision = FakeUpstream()
    vision_server = ServerThread(vision.app()).start()
    path = tmp / "forebay.yaml"
    path.write_text(config(zero.port, raw, f"{vision_server.url}/v1"))
    gw = Gateway(path, tmp / "data", tmp / "forebay.log", free_port())
    seen = Seen()
    report: dict[str, Any] = {"seconds_per_phase": args.seconds}
    try:
        report["start_s"] = gw.start()
        normal = [tenant_key(gw, f"normal-{c}", ["chat"]) for c in "abc"]
        img = tenant_key(gw, "img", ["vision"])
        prober = tenant_key(gw, "prober", ["chat", "faulty"])
        admin(
            gw,
            "PUT",
            "/admin/limits/tenant/img",
            {"usd_per_day": {"hard": BUDGET_USD}, "concurrent": 60},
        )

        async def sampler(end: float) -> None:
            while time.monotonic() < end:
                gw.sample_rss()
                await asyncio.sleep(0.5)

        def cpu() -> tuple[float, float]:  # (gateway, this load generator)
            me = resource.getrusage(resource.RUSAGE_SELF)
            return gw.cpu_s(), me.ru_utime + me.ru_stime

        # 1. baseline
        end = time.monotonic() + args.seconds
        before = cpu()
        await asyncio.gather(normal_tenants(gw, normal, end, seen, args.clients), sampler(end))
        after = cpu()
        report["cpu_baseline"] = [after[0] - before[0], after[1] - before[1]]
        # 2. attack
        seen.phase = "attack"
        end = time.monotonic() + args.seconds
        before = after
        await asyncio.gather(
            normal_tenants(gw, normal, end, seen, args.clients),
            slowloris(gw, end, seen, 100),
            header_floods(gw, end, seen),
            endless_bodies(gw, prober, end, seen, 20),
            idle_hoard(gw, end, seen, 600),
            random_keys(gw, end, seen),
            deep_json(gw, prober, end, seen),
            image_budget(gw, img, end, seen),
            faulty_upstream(gw, prober, end, seen),
            sampler(end),
        )
        after = cpu()
        report["cpu_attack"] = [after[0] - before[0], after[1] - before[1]]
        # 3. SIGKILL and restart under load
        seen.phase = "kill"
        end = time.monotonic() + args.seconds

        async def kill_and_restart() -> None:
            await asyncio.sleep(args.seconds / 2)
            gw.sigkill()
            report["restart_s"] = await asyncio.to_thread(gw.start)

        await asyncio.gather(
            normal_tenants(gw, normal, end, seen, args.clients),
            image_budget(gw, img, end, seen),
            faulty_upstream(gw, prober, end, seen),
            kill_and_restart(),
            sampler(end),
        )
        # After: everything given back?
        deadline = time.monotonic() + 15
        while True:
            held, leases = slots_in_use(gw)
            if (held == 0 and leases == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        report["slots_in_use_after"] = held
        report["img_concurrency_leases_after"] = leases
    finally:
        gw.stop()
        vision_server.stop()
        raw.stop()
        zero.stop()

    rows = ledger_rows(gw.data / "forebay.db")
    whole = {rid for rid, (status, complete, _) in seen.served.items() if complete and status}
    cut = set(seen.served) - whole
    report["responses_served"] = len(whole)
    report["served_without_row"] = len(whole - set(rows))
    # A stream's status line is sent before its end is known: compare whole answers only.
    report["served_with_other_status"] = sum(
        1
        for rid in whole & set(rows)
        if not seen.served[rid][2] and rows[rid][0] != seen.served[rid][0]
    )
    report["cut_by_the_kill"] = len(cut)
    report["cut_without_row"] = len(cut - set(rows))
    report["ledger_rows"] = len(rows)
    report["interrupted_rows"] = sum(1 for r in rows.values() if r[1] == "interrupted")
    report["rows_no_client_saw"] = len(set(rows) - set(seen.served))
    spend = sum(r[3] for r in rows.values() if r[2] == "img")
    report["budget_usd"] = BUDGET_USD
    report["img_spend_usd"] = spend
    report["overshoot_usd"] = max(0.0, spend - BUDGET_USD)
    report["one_reservation_usd"] = seen.reservation_usd
    files = [gw.log, *[p for p in gw.data.rglob("*") if p.is_file()]]
    report["secrets_found"] = find_secrets(seen, files)
    report["bytes_searched_mb"] = (
        sum(len(b) for b in seen.bytes_seen) + sum(p.stat().st_size for p in files)
    ) / 1e6
    report["peak_rss_mb"] = gw.peak_rss_mb
    for phase, results in seen.normal.items():
        ok = [ms for status, ms in results if status == 200]
        down = sum(1 for status, _ in results if status == 0)  # while the gateway restarted
        answered = len(results) - down
        report[f"normal_{phase}"] = {
            "requests": len(results),
            "connection_failures": down,
            "success": len(ok) / answered if answered else float("nan"),
            "p50_ms": statistics.median(ok) if ok else float("nan"),
            "p99_ms": pct(ok, 0.99),
            "statuses": {
                str(s): sum(1 for st, _ in results if st == s)
                for s in sorted({r[0] for r in results})
            },
        }
    report["attack_counts"] = dict(sorted(seen.counts.items()))
    return report


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "| normal tenants | requests | success of those answered | p50 ms | p99 ms "
        "| connection failures | gateway CPU s | load generator CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in ("baseline", "attack", "kill"):
        n = r.get(f"normal_{phase}")
        gw_cpu, lg_cpu = r.get(f"cpu_{phase}", (float("nan"), float("nan")))
        if n:
            lines.append(
                f"| {phase} | {n['requests']:,} | {n['success'] * 100:.2f} % | "
                f"{n['p50_ms']:.1f} | {n['p99_ms']:.1f} | {n['connection_failures']} | "
                f"{gw_cpu:.1f} | {lg_cpu:.1f} |"
            )
    checks = [
        ("slots in use after the run", r["slots_in_use_after"], "0"),
        ("concurrency leases of tenant img after the run", r["img_concurrency_leases_after"], "0"),
        (
            "budget overshoot",
            f"${r['overshoot_usd']:.4f} (spent ${r['img_spend_usd']:.4f} of "
            f"${r['budget_usd']:.2f})",
            f"at most one reservation, ${r['one_reservation_usd']:.4f}",
        ),
        ("responses served (complete, with a request id)", r["responses_served"], ""),
        ("... of them without a ledger row", r["served_without_row"], "0"),
        ("... of them with another status in the ledger", r["served_with_other_status"], "0"),
        ("responses cut by the SIGKILL", r["cut_by_the_kill"], ""),
        ("... of them without a ledger row", r["cut_without_row"], "0"),
        ("ledger rows", r["ledger_rows"], ""),
        ("... marked interrupted (replayed from the spool)", r["interrupted_rows"], ""),
        ("... of requests no client saw an answer to", r["rows_no_client_saw"], ""),
        ("secrets found in any output", len(r["secrets_found"]), "0"),
        ("peak RSS of the gateway", f"{r['peak_rss_mb']:.0f} MB", ""),
        ("start-to-ready after the SIGKILL", f"{r.get('restart_s', float('nan')):.2f} s", ""),
    ]
    lines += ["", "| check | measured | must be |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in checks]
    lines += [
        "",
        "What the attackers got (counts): "
        + ", ".join(f"{k}: {v:,}" for k, v in r["attack_counts"].items()),
    ]
    if r["secrets_found"]:
        lines += ["", "Secrets found:", *[f"* {s}" for s in r["secrets_found"][:20]]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--clients", type=int, default=4, help="closed-loop clients per normal tenant")
    ap.add_argument("--json", type=Path, default=None, help="raw results file")
    args = ap.parse_args()
    report = asyncio.run(run(args))
    out = args.json or ROOT / "bench" / "results" / time.strftime("abuse-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"\nraw results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    failed = (
        report["slots_in_use_after"]
        or report["img_concurrency_leases_after"]
        or report["served_without_row"]
        or report["cut_without_row"]
        or report["secrets_found"]
        or report["overshoot_usd"] > report["one_reservation_usd"] + 1e-9
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
