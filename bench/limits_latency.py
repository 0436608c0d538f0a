"""What limits and budgets cost per request: the same gateway and zero-delay
upstream with no limits, with in-process counters, and with Redis counters
(one EVALSHA round trip to reserve, one to settle), at concurrency 1 and 64.

    .venv/bin/python bench/limits_latency.py [--seconds 4]

Prints a Markdown table (paste it into BENCHMARKS.md). The tenant's policy
checks every kind of counter (rpm, tpm, concurrency, $ and token budgets per
day and month) with limits too high to refuse, so every request pays the full
check. Redis is a throwaway redis-server on loopback.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import Proc, Result, forebay_serve, free_port, load, zero_upstream

ADMIN = "sk-fb-bench-admin-0000000000000000000000000000"
POLICY = {
    "rpm": 10**9,
    "tpm": 10**12,
    "concurrent": 10**6,
    "usd_per_day": {"hard": 1e9, "soft": 1e8},
    "usd_per_month": {"hard": 1e9},
    "tokens_per_day": {"hard": 1e12},
    "tokens_per_month": {"hard": 1e12},
}


def _config(upstream: Proc, redis_url: str | None) -> str:
    redis = f'redis: {{url: "{redis_url}"}}\n' if redis_url else ""
    return (
        redis
        + f"""ledger: {{flush_interval_s: 0.25}}
models:
  bench:
    deployments:
      - name: zero
        base_url: {upstream.url}/v1
        model: zero
        price: {{input_per_million: 1, output_per_million: 2}}
"""
    )


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/ensure-services.sh installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def _gateway(
    tmp: Path, name: str, upstream: Proc, redis_url: str | None, limited: bool
) -> tuple[Proc, str]:
    config = tmp / f"{name}.yaml"
    config.write_text(_config(upstream, redis_url))
    gw = forebay_serve(config, tmp / name, {"FOREBAY_ADMIN_KEY": ADMIN}, tmp / f"{name}.log")
    admin = {"authorization": f"Bearer {ADMIN}"}
    key = httpx.post(f"{gw.url}/admin/keys", json={"tenant": "default"}, headers=admin).json()[
        "key"
    ]
    if limited:
        resp = httpx.put(f"{gw.url}/admin/limits/tenant/default", json=POLICY, headers=admin)
        resp.raise_for_status()
    return gw, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        upstream = zero_upstream()
        redis, redis_url = _start_redis(tmp)
        modes = {
            "no limits": _gateway(tmp, "none", upstream, None, limited=False),
            "in-process limits": _gateway(tmp, "local", upstream, None, limited=True),
            "Redis limits": _gateway(tmp, "redis", upstream, redis_url, limited=True),
        }
        try:
            results: dict[tuple[str, int], Result] = {}
            for concurrency in (1, 64):
                for mode, (gw, key) in modes.items():  # side by side, same minute
                    results[(mode, concurrency)] = load(
                        f"{gw.url}/v1/chat/completions", key, concurrency, args.seconds
                    )
        finally:
            for gw, _ in modes.values():
                gw.stop()
            upstream.stop()
            redis.terminate()
    print("| mode | concurrency | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for concurrency in (1, 64):
        base = results[("no limits", concurrency)]
        for mode in modes:
            r = results[(mode, concurrency)]
            print(
                f"| {mode} | {concurrency} | {r.rps:,.0f} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} "
                f"| {r.pct(0.5) - base.pct(0.5):+.2f} | {r.pct(0.99) - base.pct(0.99):+.2f} "
                f"| {r.errors} |"
            )


if __name__ == "__main__":
    main()
