"""Prefix affinity vs round-robin over 4 simulated servers with prefix caching.

    .venv/bin/python -m bench.prefix [--seconds 20]

Workload: 16 groups of users, each group sharing a long system prompt (3,000
tokens), each request that prompt plus its own short question, 8 output
tokens, streamed. Each `forebay sim` server (Llama-3.1-8B on one L4) keeps a
20,000-token KV cache: the whole working set (48,000 tokens) does not fit in
one server's cache, but a quarter of it does, which is the case prefix
affinity is for. The same closed-loop load (16 clients) runs through a
gateway routing with `prefix_affinity` and through one routing round-robin
(`weighted`, equal weights). Reported: mean and p99 TTFT, the servers'
prefix-cache hit rate, and each server's share of requests (max / mean).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import Proc, forebay_serve, sim_fleet

ADMIN = "sk-fb-bench-admin-0000000000000000000000000000"
SERVERS = 4
GROUPS = 16
SYSTEM_TOKENS = 3_000
KV_TOKENS = 20_000
CLIENTS = 16


def start_fleet() -> tuple[subprocess.Popen[bytes], list[str]]:
    options = ["--gpu", "l4", "--model", "llama-3.1-8b", "--max-batch", "16"]
    return sim_fleet(SERVERS, *options, "--kv-cache-tokens", str(KV_TOKENS))


def config(urls: list[str], policy: str) -> str:
    deployments = "\n".join(
        f'      - {{name: sim{i}, base_url: "{url}/v1", model: llama-3.1-8b}}'
        for i, url in enumerate(urls)
    )
    return f"""models:
  m:
    routing: {{policy: {policy}, prefix_chars: 2048}}
    deployments:
{deployments}
"""


def system_prompt(group: int) -> str:
    rng = random.Random(group)
    words = ["forebay", "turbine", "reservoir", "spillway", "penstock", "intake", "dam"]
    return f"group {group}: " + " ".join(rng.choice(words) for _ in range(SYSTEM_TOKENS))


def prefix_hits(urls: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            for s in family.samples:
                if s.name == "vllm:prefix_cache_hits_total":
                    hits += s.value
                elif s.name == "vllm:prefix_cache_queries_total":
                    queries += s.value
    return hits, queries


async def run(url: str, key: str, seconds: float) -> tuple[list[float], Counter[str]]:
    prompts = [system_prompt(g) for g in range(GROUPS)]
    ttfts: list[float] = []
    served: Counter[str] = Counter()
    rng = random.Random(11)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        end = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < end:
                group = rng.randrange(GROUPS)
                body = {
                    "model": "m",
                    "messages": [
                        {"role": "system", "content": prompts[group]},
                        {"role": "user", "content": f"question {rng.random():.6f}"},
                    ],
                    "max_tokens": 8,
                    "stream": True,
                }
                sent = time.perf_counter()
                headers = {"authorization": f"Bearer {key}"}
                async with http.post(url, json=body, headers=headers) as resp:
                    resp.raise_for_status()
                    served[resp.headers["x-forebay-route"].split(": ")[1].split(" ")[0]] += 1
                    first = None
                    async for line in resp.content:
                        if first is None and line.startswith(b"data: {") and b'"content"' in line:
                            first = time.perf_counter() - sent
                    if first is not None:
                        ttfts.append(first)

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return ttfts, served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = []
    for policy in ("prefix_affinity", "weighted"):
        fleet, urls = start_fleet()  # a fresh fleet: cold caches for each policy
        try:
            with tempfile.TemporaryDirectory() as d:
                tmp = Path(d)
                cfg = tmp / "forebay.yaml"
                cfg.write_text(config(urls, policy))
                gw: Proc = forebay_serve(
                    cfg, tmp / "data", {"FOREBAY_ADMIN_KEY": ADMIN}, tmp / "log"
                )
                try:
                    admin = {"authorization": f"Bearer {ADMIN}"}
                    key = httpx.post(
                        f"{gw.url}/admin/keys", json={"tenant": "default"}, headers=admin
                    ).json()["key"]
                    ttfts, served = asyncio.run(
                        run(f"{gw.url}/v1/chat/completions", key, args.seconds)
                    )
                finally:
                    gw.stop()
            hits, queries = prefix_hits(urls)
        finally:
            fleet.terminate()
            fleet.wait(10)
        ttfts.sort()
        mean_load = sum(served.values()) / SERVERS
        rows.append(
            (
                policy,
                len(ttfts),
                sum(ttfts) / len(ttfts) * 1000,
                ttfts[int(0.99 * (len(ttfts) - 1))] * 1000,
                hits / queries if queries else 0.0,
                max(served.values()) / mean_load,
                dict(sorted(served.items())),
            )
        )
        print(rows[-1], flush=True)
    print()
    print(
        "| routing | requests | mean TTFT ms | p99 TTFT ms | prefix-cache hit rate "
        "| max/mean load | per server |"
    )
    print("|---|---|---|---|---|---|---|")
    for policy, n, mean, p99, hit, imbalance, per in rows:
        print(
            f"| {policy} | {n} | {mean:.0f} | {p99:.0f} | {hit * 100:.0f}% "
            f"| {imbalance:.2f} | {per} |"
        )
    print()
    print(f"mean TTFT ratio (round-robin / affinity): {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
