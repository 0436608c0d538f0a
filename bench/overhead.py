"""Gateway overhead: direct to a zero-delay upstream vs through Forebay vs LiteLLM.

Everything runs on loopback, each piece in its own process:

* `bench/zero_upstream.py`, a raw-asyncio OpenAI-compatible server that answers
  from pre-built bytes (non-stream JSON with usage; SSE chunks, a usage chunk
  and `[DONE]` when streaming);
* `forebay serve` exactly as a user runs it (one worker, auth, metrics and the
  SQLite ledger on), with a tenant key created through the admin API;
* the LiteLLM proxy (`litellm --config`, one worker) from `bench/.venv-litellm`,
  in its lightest setup: master key, no database, no callbacks;
* `bench/loadgen.py`, a closed-loop raw-asyncio client, one process per cell.

Besides Chat Completions relayed to an OpenAI-compatible upstream, the same run
measures the other protocol flows (`--protocols`, bench/overhead_flows.py):
Anthropic Messages relayed to an Anthropic deployment, OpenAI Responses relayed
to an OpenAI deployment (bytes through untouched), and Messages and Responses
translated to the Chat upstream, at `--protocol-concurrency` (c=1 by default), each
against the Chat relay of the same round. A flow whose route the gateway does not
serve yet (a 404 / 405 to a probe request) is reported as not available.

For each mode (non-stream, stream) and concurrency, the targets are run
back to back, so a cell's numbers share the same machine conditions; `--rounds`
repeats the whole matrix and the report gives per-cell medians. Added latency is
computed within a round (target minus direct), then the median is taken. The
gateway's CPU per request comes from `/proc/<pid>/stat` (utime + stime) sampled at
the edges of the measured window by the load generator itself.

Run from the repository root:

    .venv/bin/python -m bench.overhead                 # about 5 minutes
    .venv/bin/python -m bench.overhead --setup-litellm # create bench/.venv-litellm first

It prints Markdown (paste into BENCHMARKS.md) and writes every raw number to
`bench/results/overhead-<time>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.overhead_flows import FLOWS, LABELS, PATHS, Flow, deployments_yaml, unavailable
from bench.overhead_flows import body as flow_body
from bench.overhead_flows import parse as parse_flows

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LITELLM_VENV = BENCH / ".venv-litellm"
RESULTS = BENCH / "results"
PY = sys.executable
FOREBAY_BIN = Path(PY).parent / "forebay"

ADMIN_KEY = "fb-admin-bench-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream"
LITELLM_KEY = "sk-litellm-bench"
TARGETS = ("direct", "baseline", "forebay", "litellm")
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_tree(root: int) -> list[int]:
    """`root` and all its descendants (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def http_request(
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 5.0,
    raw: str | None = None,
    protocol: str = "chat",
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"content-type": "application/json"}
    if protocol == "messages":
        headers["anthropic-version"] = "2023-06-01"
        if token:
            headers["x-api-key"] = token
    elif token:
        headers["authorization"] = f"Bearer {token}"
    if raw is None and body is not None:
        raw = json.dumps(body)
    try:
        conn.request(method, path, raw, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float  # time.perf_counter() just before the process was spawned
    ready_s: float = float("nan")

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.pids())

    def wait_ready(self, path: str, timeout: float) -> float:
        """Seconds from process start until `path` answers 200 (polled every 5 ms)."""
        started = self.started
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request(self.port, "GET", path, timeout=1.0)[0] == 200:
                    self.ready_s = time.perf_counter() - started
                    return self.ready_s
            time.sleep(0.005)
        raise TimeoutError(f"{self.name} not ready on {path} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(name: str, cmd: list[str], port: int, log: Path, env: dict[str, str]) -> Service:
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=ROOT
        )
    return Service(name, proc, port, log, started)


def start_upstream(tmp: Path, chunks: int) -> Service:
    port = free_port()
    cmd = [PY, str(BENCH / "zero_upstream.py"), "--port", str(port), "--chunks", str(chunks)]
    svc = spawn("zero upstream", cmd, port, tmp / "upstream.log", {})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return svc
        time.sleep(0.01)
    raise TimeoutError("the zero upstream did not start")


def forebay_config(tmp: Path, upstream_port: int) -> Path:
    path = tmp / "forebay.yaml"
    path.write_text(
        "models:\n"
        "  bench:\n"
        "    kind: chat\n"
        "    deployments:\n"
        "      - name: zero\n"
        "        provider: openai_compat\n"
        f"        base_url: http://127.0.0.1:{upstream_port}/v1\n"
        "        model: zero\n"
        f"        api_key: {UPSTREAM_KEY}\n"
        "        price: {input_per_million: 1.0, output_per_million: 2.0}\n"
        + deployments_yaml(upstream_port, UPSTREAM_KEY)
    )
    return path


def start_forebay(
    config: Path, data_dir: Path, log: Path, source: Path | None = None, name: str = "forebay"
) -> Service:
    """`forebay serve` from this checkout, or (`source`) from another checkout's src/
    run by the same interpreter and packages, for a before/after comparison."""
    port = free_port()
    cmd = [
        str(FOREBAY_BIN),
        "serve",
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {"FOREBAY_ADMIN_KEY": ADMIN_KEY}
    if source is not None:
        cmd[:1] = [PY, "-m", "forebay"]
        env["PYTHONPATH"] = str(source / "src")
    svc = spawn(name, cmd, port, log, env)
    svc.wait_ready("/readyz", 60)
    return svc


def checkout(rev: str, into: Path) -> Path:
    """A detached worktree of `rev` (removed by the caller), for --baseline."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), rev], check=True
    )
    return into


def create_tenant_key(port: int) -> str:
    status, body = http_request(port, "POST", "/admin/tenants", {"name": "bench"}, ADMIN_KEY)
    if status not in (200, 201):
        raise RuntimeError(f"POST /admin/tenants: {status} {body[:300]!r}")
    status, body = http_request(port, "POST", "/admin/keys", {"tenant": "bench"}, ADMIN_KEY)
    if status not in (200, 201):
        raise RuntimeError(f"POST /admin/keys: {status} {body[:300]!r}")
    return str(json.loads(body)["key"])


def litellm_env() -> dict[str, str]:
    # Offline: use the bundled model cost map; errors only (no access log per request).
    return {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"}


def start_litellm(tmp: Path, upstream_port: int) -> Service:
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/zero\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
    )
    port = free_port()
    cmd = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    svc = spawn("litellm", cmd, port, tmp / "litellm.log", litellm_env())
    svc.wait_ready("/health/readiness", 180)
    return svc


def setup_litellm() -> None:
    """Create bench/.venv-litellm with `litellm[proxy]` (and uvloop, which it uses)."""
    if not (LITELLM_VENV / "bin" / "python").exists():
        subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--disable-pip-version-check", "litellm[proxy]", "uvloop"], check=True)


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Cell:
    round: int
    target: str
    mode: str
    concurrency: int
    result: dict[str, Any]
    gateway_cpu_ms: float | None
    upstream_cpu_ms: float
    loadgen_cpu_ms: float
    rss_mb: float | None
    # The flow (bench/overhead_flows.py); for direct cells, the upstream's protocol.
    protocol: str = "chat"


def load(
    url: str,
    token: str | None,
    mode: str,
    concurrency: int,
    args: argparse.Namespace,
    pids: list[int],
    protocol: str = "chat",
    model: str = "bench",
) -> dict[str, Any]:
    cmd = [
        PY,
        str(BENCH / "loadgen.py"),
        "--url",
        url,
        "--protocol",
        protocol,
        "--body",
        flow_body(protocol, model, mode == "stream"),
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--pids",
        ",".join(map(str, pids)),
    ]
    if token:
        cmd += ["--token", token]
    if mode == "stream":
        cmd.append("--stream")
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=120, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def per_request_ms(cpu: float, n: int) -> float:
    return cpu * 1000 / n if n else float("nan")


def measure(
    target: str,
    svc: Service | None,
    token: str | None,
    upstream: Service,
    mode: str,
    concurrency: int,
    rnd: int,
    args: argparse.Namespace,
    flow: Flow = FLOWS["chat"],
) -> Cell:
    """One cell; `flow` is what goes through the gateway (direct: what the zero
    upstream answers, `flow.upstream`'s protocol)."""
    port = svc.port if svc is not None else upstream.port
    proto = flow.inbound if svc is not None else flow.upstream
    url = f"http://127.0.0.1:{port}{PATHS[proto]}"
    gw_pids = svc.pids() if svc is not None else []
    pids = [*gw_pids, upstream.proc.pid]
    res = load(url, token, mode, concurrency, args, pids, proto, flow.model)
    n = int(res["requests"])
    cpu = {int(k): float(v) for k, v in res["cpu_s"].items()}
    gw_cpu = sum(cpu[p] for p in gw_pids)
    return Cell(
        round=rnd,
        target=target,
        mode=mode,
        concurrency=concurrency,
        result=res,
        gateway_cpu_ms=per_request_ms(gw_cpu, n) if svc is not None else None,
        upstream_cpu_ms=per_request_ms(cpu[upstream.proc.pid], n),
        loadgen_cpu_ms=per_request_ms(float(res["loadgen_cpu_s"]), n),
        rss_mb=svc.rss_mb() if svc is not None else None,
        protocol=flow.name if svc is not None else flow.upstream,
    )


# --- environment -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions = {}
    for pkg in ("forebay", "starlette", "uvicorn", "uvloop", "httptools", "aiohttp", "orjson"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    info = {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "ram_gib": f"{mem_kb / 1024 / 1024:.1f}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    lite_py = LITELLM_VENV / "bin" / "python"
    if lite_py.exists():
        probe = "import importlib.metadata as m, platform; "
        probe += "print(m.version('litellm'), m.version('fastapi'), m.version('uvicorn'), "
        probe += "platform.python_version())"
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run([str(lite_py), "-c", probe], capture_output=True, text=True)
            parts = out.stdout.split()
            if len(parts) == 4:
                info["litellm"] = (
                    f"litellm {parts[0]} (fastapi {parts[1]}, uvicorn {parts[2]}, "
                    f"Python {parts[3]})"
                )
    return info


def scrape_metrics(port: int) -> dict[str, float]:
    """Totals of a few Forebay counters: proof that metrics and the ledger were on."""
    _, text = http_request(port, "GET", "/metrics", token=ADMIN_KEY)
    wanted = {
        "forebay_requests_total": 0.0,
        "forebay_ledger_written_events_total": 0.0,
        "forebay_ledger_dropped_events_total": 0.0,
    }
    for line in text.decode().splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            wanted[name] += float(line.rsplit(" ", 1)[1])
    return wanted


# --- report ------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:,.{digits}f}"


@dataclass
class Report:
    cells: list[Cell] = field(default_factory=list)
    startup: dict[str, Any] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    flows: list[str] = field(default_factory=lambda: ["chat"])  # the flows asked for
    unavailable: dict[str, str] = field(default_factory=dict)  # flow -> why not measured

    def pick(self, target: str, mode: str, conc: int, protocol: str = "chat") -> list[Cell]:
        """The cells of one target; a direct cell's protocol is that of the upstream
        the flow `protocol` reaches."""
        if target == "direct":
            protocol = FLOWS[protocol].upstream
        return [
            c
            for c in self.cells
            if c.target == target
            and c.mode == mode
            and c.concurrency == conc
            and c.protocol == protocol
        ]

    def added(self, target: str, mode: str, conc: int, key: str, protocol: str = "chat") -> float:
        """Median over rounds of (target - direct) for one latency percentile."""
        direct = {c.round: c.result[key] for c in self.pick("direct", mode, conc, protocol)}
        diffs = [
            c.result[key] - direct[c.round]
            for c in self.pick(target, mode, conc, protocol)
            if c.round in direct
        ]
        return med(diffs)

    def summary(
        self, target: str, mode: str, conc: int, protocol: str = "chat"
    ) -> dict[str, float]:
        cells = self.pick(target, mode, conc, protocol)
        direct_rps = {c.round: c.result["rps"] for c in self.pick("direct", mode, conc, protocol)}
        return {
            "rps": med([c.result["rps"] for c in cells]),
            "vs_direct": med(
                [c.result["rps"] / direct_rps[c.round] for c in cells if direct_rps.get(c.round)]
            ),
            "p50": med([c.result["p50_ms"] for c in cells]),
            "p99": med([c.result["p99_ms"] for c in cells]),
            "ttfb50": med([c.result["ttfb_p50_ms"] for c in cells]),
            "add50": self.added(target, mode, conc, "p50_ms", protocol),
            "add99": self.added(target, mode, conc, "p99_ms", protocol),
            "cpu": med([c.gateway_cpu_ms for c in cells if c.gateway_cpu_ms is not None]),
            "rss": med([c.rss_mb for c in cells if c.rss_mb is not None]),
            "errors": sum(c.result["errors"] for c in cells),
            "n": sum(c.result["requests"] for c in cells),
            "lg_cpu": med([c.loadgen_cpu_ms for c in cells]),
        }

    def markdown(self, targets: list[str], modes: list[str], concs: list[int]) -> str:
        rounds = len({c.round for c in self.cells})
        lines = [
            f"Medians over {rounds} round(s); added latency = target minus direct in the same "
            "round. CPU = gateway process utime+stime per request; ceiling = 1000 / CPU ms, "
            "the req/s one fully busy core could serve at that cost.",
            "",
        ]
        for mode in modes:
            lines += [
                f"**{mode}**",
                "",
                "| conc | target | req/s | vs direct | p50 ms | p99 ms | +p50 ms | +p99 ms "
                "| TTFB p50 ms | gw CPU ms/req | ceiling req/s | RSS MB | errors |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for conc in concs:
                for target in targets:
                    if not self.pick(target, mode, conc):
                        continue
                    s = self.summary(target, mode, conc)
                    gw = target != "direct"
                    lines.append(
                        f"| {conc} | {target} | {fmt(s['rps'], 0)} | "
                        f"{fmt(s['vs_direct'] * 100, 1) + ' %' if gw else ''} | "
                        f"{fmt(s['p50'])} | {fmt(s['p99'])} | "
                        f"{fmt(s['add50']) if gw else ''} | {fmt(s['add99']) if gw else ''} | "
                        f"{fmt(s['ttfb50'])} | {fmt(s['cpu']) if gw else ''} | "
                        f"{fmt(1000 / s['cpu'], 0) if gw and s['cpu'] > 0 else ''} | "
                        f"{fmt(s['rss'], 0) if gw else ''} | {s['errors']} |"
                    )
            lines.append("")
        lines += self.side_costs()
        lines += self.versus_baseline(modes, concs, targets)
        lines += self.ratios(modes, concs, targets)
        lines += self.protocols_table(modes)
        lines += self.targets_table(modes)
        return "\n".join(lines)

    def protocol_concs(self) -> list[int]:
        return sorted(
            {c.concurrency for c in self.cells if c.target == "forebay" and c.protocol != "chat"}
        )

    def versus_chat(self, flow: str, mode: str, conc: int) -> dict[str, float]:
        """One flow's Forebay cells against the Chat relay's of the same rounds:
        medians over rounds of the per-round ratio and difference."""
        chat = {c.round: c for c in self.pick("forebay", mode, conc)}
        chat_direct = {c.round: c for c in self.pick("direct", mode, conc)}
        direct = {c.round: c for c in self.pick("direct", mode, conc, flow)}
        ratio, diff, add_ratio, add_diff = [], [], [], []
        for c in self.pick("forebay", mode, conc, flow):
            ch = chat.get(c.round)
            if ch is None or c.gateway_cpu_ms is None or ch.gateway_cpu_ms is None:
                continue
            ratio.append(c.gateway_cpu_ms / ch.gateway_cpu_ms)
            diff.append(c.gateway_cpu_ms - ch.gateway_cpu_ms)
            d, cd = direct.get(c.round), chat_direct.get(c.round)
            if d is not None and cd is not None:
                add = c.result["p50_ms"] - d.result["p50_ms"]
                chat_add = ch.result["p50_ms"] - cd.result["p50_ms"]
                add_diff.append(add - chat_add)
                if chat_add > 0:
                    add_ratio.append(add / chat_add)
        return {
            "cpu_ratio": med(ratio),
            "cpu_diff_ms": med(diff),
            "add50_ratio": med(add_ratio),
            "add50_diff_ms": med(add_diff),
        }

    def protocols_table(self, modes: list[str]) -> list[str]:
        concs = self.protocol_concs()
        if not concs and not self.unavailable:
            return []
        out = [
            "**Protocols** (Forebay; each flow against the Chat relay measured in the same "
            "round: medians over rounds of the per-round ratio or difference; +p50 is against "
            "the zero upstream answering directly in the protocol Forebay sends it)",
            "",
            "| mode | conc | flow | req/s | p50 ms | +p50 ms | gw CPU ms/req | CPU ÷ chat "
            "| CPU - chat µs | +p50 ÷ chat | +p50 - chat ms | errors |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for mode in modes:
            for conc in concs:
                for flow in self.flows:
                    label = LABELS[flow]
                    if flow in self.unavailable:
                        why = self.unavailable[flow]
                        out.append(f"| {mode} | {conc} | {label} | {why} |||||||||")
                        continue
                    if not self.pick("forebay", mode, conc, flow):
                        continue
                    s, v = (
                        self.summary("forebay", mode, conc, flow),
                        self.versus_chat(flow, mode, conc),
                    )
                    out.append(
                        f"| {mode} | {conc} | {label} | {fmt(s['rps'], 0)} | {fmt(s['p50'])} | "
                        f"{fmt(s['add50'])} | {fmt(s['cpu'], 3)} | {fmt(v['cpu_ratio'])}x | "
                        f"{fmt(v['cpu_diff_ms'] * 1000, 0)} | {fmt(v['add50_ratio'])}x | "
                        f"{fmt(v['add50_diff_ms'], 3)} | {s['errors']} |"
                    )
        return [*out, ""]

    def protocol_targets(self, modes: list[str]) -> list[str]:
        """The issue's goals at c=1: a relayed Messages or Responses request costs
        within 10 % of the Chat relay's CPU, a translated one at most 0.3 ms more."""
        if 1 not in self.protocol_concs() and not self.unavailable:
            return []
        out = []
        for mode in modes:
            for flow in self.flows:
                if flow == "chat":
                    continue
                translated = FLOWS[flow].translated
                if translated:
                    name = f"{LABELS[flow]}: CPU/req - Chat relay, c=1, {mode}"
                    goal = "≤ +0.30 ms"
                else:
                    name = f"{LABELS[flow]}: CPU/req ÷ Chat relay, c=1, {mode}"
                    goal = "≤ 1.10x"
                if flow in self.unavailable:
                    out.append(f"| {name} | {self.unavailable[flow]} | {goal} | n/a |")
                    continue
                if not self.pick("forebay", mode, 1, flow):
                    continue
                v = self.versus_chat(flow, mode, 1)
                if translated:
                    value, ok = v["cpu_diff_ms"], v["cpu_diff_ms"] <= 0.3
                    shown = f"{v['cpu_diff_ms']:+.3f} ms"
                else:
                    value, ok = v["cpu_ratio"], v["cpu_ratio"] <= 1.10
                    shown = f"{fmt(value)}x"
                verdict = "n/a" if value != value else ("hit" if ok else "MISS")
                out.append(f"| {name} | {shown} | {goal} | {verdict} |")
        return out

    def side_costs(self) -> list[str]:
        """The load generator's and the upstream's share, in the Forebay cells: both
        must stay small next to the gateway's, or the gateway is not what is measured."""
        cells = [c for c in self.cells if c.target == "forebay"]
        if not cells:
            return []
        lg = [c.loadgen_cpu_ms * 1000 for c in cells]
        up = [c.upstream_cpu_ms * 1000 for c in cells]
        busy = [c.result["loadgen_cpu_s"] / c.result["seconds"] * 100 for c in cells]
        return [
            f"In the Forebay cells the load generator used {fmt(min(lg), 0)} to "
            f"{fmt(max(lg), 0)} µs of CPU per request (at most {fmt(max(busy), 0)} % of a "
            f"core) and the zero upstream {fmt(min(up), 0)} to {fmt(max(up), 0)} µs.",
            "",
        ]

    def versus_baseline(self, modes: list[str], concs: list[int], targets: list[str]) -> list[str]:
        """This checkout against --baseline, measured in the same rounds: the ratio says
        whether a change made the hot path dearer, whatever the machine's load."""
        if "baseline" not in targets:
            return []
        out = [
            f"**Forebay vs baseline {self.startup.get('baseline', '')}** (ratios of the medians "
            "above; CPU > 1.00x means this checkout costs more per request)",
            "",
            "| mode | conc | CPU/req now ÷ baseline | +p50 now - baseline ms "
            "| req/s now ÷ baseline |",
            "|---|---:|---:|---:|---:|",
        ]
        for mode in modes:
            for conc in concs:
                now = self.summary("forebay", mode, conc)
                base = self.summary("baseline", mode, conc)
                out.append(
                    f"| {mode} | {conc} | {fmt(now['cpu'] / base['cpu'])}x | "
                    f"{fmt(now['add50'] - base['add50'], 3)} | {fmt(now['rps'] / base['rps'])}x |"
                )
        return [*out, ""]

    def ratios(self, modes: list[str], concs: list[int], targets: list[str]) -> list[str]:
        if "litellm" not in targets:
            return []
        out = [
            "**Forebay vs LiteLLM** (ratios of the medians above)",
            "",
            "| mode | conc | req/s Forebay ÷ LiteLLM | +p50 LiteLLM ÷ Forebay "
            "| CPU/req LiteLLM ÷ Forebay |",
            "|---|---:|---:|---:|---:|",
        ]
        for mode in modes:
            for conc in concs:
                f, lt = self.summary("forebay", mode, conc), self.summary("litellm", mode, conc)
                add = lt["add50"] / f["add50"] if f["add50"] > 0 else float("nan")
                out.append(
                    f"| {mode} | {conc} | {fmt(f['rps'] / lt['rps'], 1)}x | {fmt(add, 1)}x | "
                    f"{fmt(lt['cpu'] / f['cpu'], 1)}x |"
                )
        return [*out, ""]

    def targets_table(self, modes: list[str]) -> list[str]:
        def row(name: str, value: float, goal: str, ok: bool, unit: str) -> str:
            shown = fmt(value, 0 if unit == "req/s" else 2)
            return f"| {name} | {shown} {unit} | {goal} | {'hit' if ok else 'MISS'} |"

        out = ["**Targets** (Forebay, one worker)", "", "| target | measured | goal | |"]
        out.append("|---|---:|---:|---|")
        for mode in modes:
            s1 = self.summary("forebay", mode, 1)
            out.append(
                row(f"added p50, c=1, {mode}", s1["add50"], "≤ 0.5 ms", s1["add50"] <= 0.5, "ms")
            )
            out.append(
                row(f"added p99, c=1, {mode}", s1["add99"], "≤ 2 ms", s1["add99"] <= 2, "ms")
            )
        if "non-stream" in modes and self.pick("forebay", "non-stream", 64):
            rps = self.summary("forebay", "non-stream", 64)["rps"]
            out.append(row("req/s, c=64, non-stream", rps, "≥ 2,000", rps >= 2000, "req/s"))
        out += self.protocol_targets(modes)
        st = self.startup
        if st:
            out.append(
                row("idle RSS", st["idle_rss_mb"], "≤ 150 MB", st["idle_rss_mb"] <= 150, "MB")
            )
            r = st["restart_ready_s_median"]
            out.append(row("start-to-ready (restart)", r, "≤ 2 s", r <= 2, "s"))
            f = st["first_ready_s"]
            out.append(row("start-to-ready (first start)", f, "≤ 2 s", f <= 2, "s"))
        return [*out, ""]


# --- main --------------------------------------------------------------------------------------


def rotate(seq: list[T], k: int) -> list[T]:
    items = list(seq)
    k %= len(items)
    return items[k:] + items[:k]


@contextlib.contextmanager
def services(tmp: Path, args: argparse.Namespace, report: Report) -> Iterator[dict[str, Any]]:
    started: list[Service] = []
    try:
        upstream = start_upstream(tmp, args.chunks)
        started.append(upstream)
        config = forebay_config(tmp, upstream.port)
        data_dir = tmp / "data"
        # First start: creates the SQLite database, runs migrations, bootstraps keys.
        fb = start_forebay(config, data_dir, tmp / "forebay.log")
        started.append(fb)
        first_ready = fb.ready_s
        key = create_tenant_key(fb.port)
        fb.stop()
        started.remove(fb)
        restarts = []
        for _ in range(args.starts):
            fb = start_forebay(config, data_dir, tmp / "forebay.log")
            restarts.append(fb.ready_s)
            started.append(fb)
            if len(restarts) < args.starts:
                fb.stop()
                started.remove(fb)
        time.sleep(1.0)
        report.startup = {
            "first_ready_s": first_ready,
            "restart_ready_s": restarts,
            "restart_ready_s_median": med(restarts),
            "idle_rss_mb": fb.rss_mb(),
        }
        lite: Service | None = None
        if args.litellm:
            try:
                lite = start_litellm(tmp, upstream.port)
                started.append(lite)
                time.sleep(1.0)
                report.startup["litellm_ready_s"] = lite.ready_s
                report.startup["litellm_idle_rss_mb"] = lite.rss_mb()
            except (RuntimeError, TimeoutError, OSError) as exc:
                report.notes.append(f"LiteLLM could not be started, column skipped: {exc}")
                print(report.notes[-1], file=sys.stderr)
        base: Service | None = None
        base_key: str | None = None
        if args.baseline:
            source = checkout(args.baseline, tmp / "baseline-src")
            base = start_forebay(
                config, tmp / "baseline-data", tmp / "baseline.log", source, "baseline"
            )
            started.append(base)
            base_key = create_tenant_key(base.port)
            report.startup["baseline"] = args.baseline
        yield {
            "upstream": upstream,
            "forebay": fb,
            "key": key,
            "litellm": lite,
            "baseline": base,
            "baseline_key": base_key,
        }
    finally:
        for svc in reversed(started):
            svc.stop()
        if args.baseline:
            remove = ["worktree", "remove", "--force", str(tmp / "baseline-src")]
            subprocess.run(["git", "-C", str(ROOT), *remove], check=False)


def probe_flows(svc: dict[str, Any], flows: list[Flow], report: Report) -> list[Flow]:
    """The flows Forebay serves: one request each (a route not wired yet answers
    404 / 405, and its cells are reported as not available instead of run)."""
    fb: Service = svc["forebay"]
    ok = []
    for flow in flows:
        try:
            status, answer = http_request(
                fb.port,
                "POST",
                flow.path,
                token=svc["key"],
                raw=flow_body(flow.inbound, flow.model, False),
                protocol=flow.inbound,
            )
            why = unavailable(status, answer)
        except (OSError, http.client.HTTPException) as exc:
            why = f"not available ({type(exc).__name__}: {exc})"
        if why is None:
            ok.append(flow)
            continue
        report.unavailable[flow.name] = why
        report.notes.append(f"{LABELS[flow.name]}: {why}; its cells are skipped.")
        print(report.notes[-1], file=sys.stderr)
    return ok


def run(args: argparse.Namespace) -> Report:
    report = Report(info=machine())
    modes = [m for m in ("non-stream", "stream") if m in args.modes.split(",")]
    concs = [int(c) for c in args.concurrency.split(",")]
    flows = parse_flows(args.protocols)
    pconcs = [int(c) for c in args.protocol_concurrency.split(",") if c]
    report.flows = [f.name for f in flows]
    tmp = Path(tempfile.mkdtemp(prefix="forebay-overhead-"))
    try:
        with services(tmp, args, report) as svc:
            targets: dict[str, tuple[Service | None, str | None]] = {
                "direct": (None, UPSTREAM_KEY),
                "forebay": (svc["forebay"], svc["key"]),
            }
            if svc["litellm"] is not None:
                targets["litellm"] = (svc["litellm"], LITELLM_KEY)
            if svc["baseline"] is not None:
                targets["baseline"] = (svc["baseline"], svc["baseline_key"])
            extra = [f for f in probe_flows(svc, flows, report) if f.name != "chat"]
            # Direct cells for the upstream protocols the extra flows reach (Chat's are there).
            direct = [FLOWS[u] for u in sorted({f.upstream for f in extra} - {"chat"})]

            def jobs(conc: int) -> list[tuple[str, Flow]]:
                out = [(t, FLOWS["chat"]) for t in targets]
                if conc in pconcs:
                    out += [("direct", f) for f in direct] + [("forebay", f) for f in extra]
                return out

            step = 0
            total = args.rounds * len(modes) * sum(len(jobs(c)) for c in concs)
            for rnd in range(args.rounds):
                for mode in modes:
                    for conc in concs:
                        # Rotate the order so no target always runs first or last.
                        for target, flow in rotate(jobs(conc), step):
                            step += 1
                            gw, token = targets[target]
                            cell = measure(
                                target, gw, token, svc["upstream"], mode, conc, rnd, args, flow
                            )
                            report.cells.append(cell)
                            r = cell.result
                            print(
                                f"[{step}/{total}] round {rnd} {mode:10} c={conc:<3} "
                                f"{target:8} {cell.protocol:17} {r['rps']:8.0f} req/s  "
                                f"p50 {r['p50_ms']:7.2f}  "
                                f"p99 {r['p99_ms']:7.2f} ms  gw cpu "
                                f"{fmt(cell.gateway_cpu_ms, 3)} ms/req  errors {r['errors']}",
                                file=sys.stderr,
                                flush=True,
                            )
            time.sleep(1.0)  # let the ledger writer flush its last batch
            report.startup["forebay_counters"] = scrape_metrics(svc["forebay"].port)
            report.startup["forebay_rss_after_mb"] = svc["forebay"].rss_mb()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description="Gateway overhead: direct vs Forebay vs LiteLLM.")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    ap.add_argument("--rounds", type=int, default=2, help="repeat the whole matrix")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--modes", default="non-stream,stream")
    ap.add_argument(
        "--protocols",
        default=",".join(FLOWS),
        help="flows through Forebay (chat is always measured): " + ", ".join(FLOWS),
    )
    ap.add_argument(
        "--protocol-concurrency",
        default="1",
        help="the concurrencies at which the flows other than chat are measured",
    )
    ap.add_argument("--chunks", type=int, default=16, help="content chunks per streamed answer")
    ap.add_argument("--starts", type=int, default=3, help="Forebay restarts timed to ready")
    ap.add_argument("--no-litellm", dest="litellm", action="store_false")
    ap.add_argument("--setup-litellm", action="store_true", help="create bench/.venv-litellm")
    ap.add_argument("--json", type=Path, default=None, help="raw results file")
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also measure Forebay at this git revision (e.g. main~3), side by side",
    )
    args = ap.parse_args()
    if args.setup_litellm:
        setup_litellm()
    if args.litellm and not (LITELLM_VENV / "bin" / "litellm").exists():
        print(
            f"note: {LITELLM_VENV.relative_to(ROOT)} is missing, so the LiteLLM column is "
            "skipped; create it with --setup-litellm.",
            file=sys.stderr,
        )
        args.litellm = False
    report = run(args)
    RESULTS.mkdir(exist_ok=True)
    path = args.json or RESULTS / time.strftime("overhead-%Y%m%d-%H%M%S.json")
    raw = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "info": report.info,
        "startup": report.startup,
        "notes": report.notes,
        "cells": [c.__dict__ for c in report.cells],
    }
    path.write_text(json.dumps(raw, indent=1))
    targets = [t for t in TARGETS if any(c.target == t for c in report.cells)]
    modes = [m for m in ("non-stream", "stream") if m in args.modes.split(",")]
    concs = [int(c) for c in args.concurrency.split(",")]
    print(render(report, targets, modes, concs))
    print(f"\nraw results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def render(report: Report, targets: list[str], modes: list[str], concs: list[int]) -> str:
    i, st = report.info, report.startup
    lines = [
        f"Machine: {i['cpu']}, {i['cores']} cores, {i['ram_gib']} GiB RAM, Linux {i['kernel']}; "
        f"Python {i['python']}; {i['packages']}"
        + (f"; peer {i['litellm']}" if "litellm" in i else "")
        + f". Load average at start {i['loadavg_start']}, at end {i['loadavg_end']}.",
        "",
        f"Forebay start-to-ready: first start (new data dir: database, migrations, keys) "
        f"{fmt(st['first_ready_s'])} s; restarts "
        + ", ".join(fmt(x) for x in st["restart_ready_s"])
        + f" s; idle RSS {fmt(st['idle_rss_mb'], 0)} MB, "
        f"RSS after the run {fmt(st.get('forebay_rss_after_mb'), 0)} MB.",
    ]
    if "litellm_ready_s" in st:
        lines.append(
            f"LiteLLM start-to-ready {fmt(st['litellm_ready_s'])} s; idle RSS "
            f"{fmt(st['litellm_idle_rss_mb'], 0)} MB."
        )
    counters = st.get("forebay_counters")
    if counters:
        lines.append(
            f"Forebay counted {counters['forebay_requests_total']:.0f} requests; ledger wrote "
            f"{counters['forebay_ledger_written_events_total']:.0f} events, dropped "
            f"{counters['forebay_ledger_dropped_events_total']:.0f}."
        )
    lines += [*report.notes, "", report.markdown(targets, modes, concs)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
