"""Overload: mixed realtime / interactive / batch traffic at 1x, 2x and 3x the
capacity of a simulated fleet, through Forebay with traffic classes on, and
through the same gateway with classes off (one FIFO queue) as the baseline.

    .venv/bin/python -m bench.overload [--seconds 20]

Fleet: 2 `forebay sim` servers (Llama-3.1-8B on one L4 each, 16 running
sequences), every request streamed with 8 to 56 output tokens (mean 32). The
gateway caps each server at 16 requests in flight, so excess traffic waits in
Forebay's queue, where classes apply; with classes on, one slot per server is
kept for realtime (`admission.reserved_for_top: 0.1`). Capacity is measured
first (batch requests in a closed loop, saturated, completions per second).
Arrivals are Poisson: 20% realtime (TTFT objective 500 ms, queue allowance
300 ms), 30% interactive (3 s / 2.5 s), 50% batch (30 s / 25 s), each class
from its own tenant.

Reported per class: p50/p99 TTFT of admitted requests, SLO attainment (TTFT
within the class objective), shed count (503); overall goodput (requests per
second that finished within their class's TTFT objective) as a share of
capacity; and realtime requests that were shed while a batch request was
given a slot (between the realtime request's arrival and its refusal).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

from bench.harness import Proc, forebay_serve, sim_fleet

CLASSES = {  # name: (share, TTFT objective ms, max queue ms, priority)
    "realtime": (0.2, 500, 300, 0),  # allowance = objective - ~200 ms to a first token
    "interactive": (0.3, 3_000, 2_500, 1),
    "batch": (0.5, 30_000, 25_000, 2),
}
ADMIN = "sk-fb-bench-admin-0000000000000000000000000000"
SLOTS_PER_SERVER = 16
OUTPUT_TOKENS = 32


@dataclass
class Outcome:
    cls: str
    sent: float
    status: int
    ttft_s: float | None = None
    admitted_at: float | None = None  # when its first byte arrived
    ended: float = 0.0  # when the answer (or the refusal) was complete


def start_fleet(servers: int) -> tuple[subprocess.Popen[bytes], list[str]]:
    return sim_fleet(
        servers, "--gpu", "l4", "--model", "llama-3.1-8b", "--max-batch", str(SLOTS_PER_SERVER)
    )


def gateway_config(urls: list[str], classes_on: bool) -> str:
    classes = "\n".join(
        f"  {name}: {{priority: {prio}, ttft_slo_ms: {slo}, deadline_ms: 120000, "
        f"max_queue_ms: {queue}, policy: least_loaded}}"
        for name, (_, slo, queue, prio) in CLASSES.items()
    )
    deployments = "\n".join(
        f'      - {{name: sim{i}, base_url: "{url}/v1", model: llama-3.1-8b, '
        f"max_concurrency: {SLOTS_PER_SERVER}, adaptive_concurrency: false}}"
        for i, url in enumerate(urls)
    )
    return f"""classes:
{classes}
admission: {{enabled: {str(classes_on).lower()}, default_class: interactive, reserved_for_top: 0.1}}
models:
  m:
    routing: {{policy: least_loaded}}
    deployments:
{deployments}
"""


def make_keys(gw: Proc) -> dict[str, str]:
    admin = {"authorization": f"Bearer {ADMIN}"}
    keys = {}
    for name in CLASSES:
        httpx.post(f"{gw.url}/admin/tenants", json={"name": name}, headers=admin)
        made = httpx.post(
            f"{gw.url}/admin/keys",
            json={"tenant": name, "classes": [name], "default_class": name},
            headers=admin,
        )
        made.raise_for_status()
        keys[name] = made.json()["key"]
    return keys


async def one(
    http: aiohttp.ClientSession, url: str, key: str, cls: str, t0: float, max_tokens: int
) -> Outcome:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": f"{cls} request {random.random()}"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    sent = time.perf_counter()
    out = Outcome(cls, sent - t0, 0)
    async with http.post(url, json=body, headers={"authorization": f"Bearer {key}"}) as resp:
        out.status = resp.status
        if resp.status != 200:
            await resp.read()
            out.ended = time.perf_counter() - t0
            return out
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"content"' in line and out.ttft_s is None:
                now = time.perf_counter()
                out.ttft_s = now - sent
                out.admitted_at = now - t0
        out.ended = time.perf_counter() - t0
        return out


async def closed_loop(url: str, key: str, concurrency: int, seconds: float) -> float:
    """Completions per second with the fleet saturated: its capacity."""
    done = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                o = await one(http, url, key, "batch", t0, OUTPUT_TOKENS)
                if o.status == 200 and time.perf_counter() <= end:
                    done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


async def open_loop(url: str, keys: dict[str, str], rate: float, seconds: float) -> list[Outcome]:
    rng = random.Random(7)
    names = list(CLASSES)
    weights = [CLASSES[n][0] for n in names]
    tasks = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=300)
    ) as http:
        t0 = time.perf_counter()
        next_at = t0
        while next_at < t0 + seconds:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            cls = rng.choices(names, weights)[0]
            # Output lengths vary (8 to 56 tokens, mean 32), so slots free up at
            # scattered times rather than in cohorts.
            length = rng.randint(8, 2 * OUTPUT_TOKENS - 8)
            tasks.append(asyncio.create_task(one(http, url, keys[cls], cls, t0, length)))
            next_at += rng.expovariate(rate)
        return await asyncio.gather(*tasks)


def summarize(outcomes: list[Outcome], capacity: float) -> dict[str, object]:
    by_class: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_class[o.cls].append(o)
    rows = {}
    good = 0
    for cls, items in by_class.items():
        slo = CLASSES[cls][1] / 1000
        admitted = [o for o in items if o.status == 200 and o.ttft_s is not None]
        ttfts = sorted(o.ttft_s for o in admitted if o.ttft_s is not None)
        within = sum(1 for t in ttfts if t <= slo)
        good += within
        rows[cls] = {
            "sent": len(items),
            "admitted": len(admitted),
            "shed": sum(1 for o in items if o.status == 503),
            "p50": ttfts[len(ttfts) // 2] * 1000 if ttfts else float("nan"),
            "p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))] * 1000
            if ttfts
            else float("nan"),
            "attainment": within / len(admitted) if admitted else float("nan"),
        }
    # A batch request got its slot about one unloaded TTFT before its first byte.
    unloaded = min((o.ttft_s for o in outcomes if o.ttft_s is not None), default=0.0)
    batch_grants = [o.admitted_at - unloaded for o in by_class["batch"] if o.admitted_at]
    rt_shed_during_batch = sum(
        1
        for o in by_class["realtime"]
        if o.status == 503 and any(o.sent <= g <= o.ended for g in batch_grants)
    )
    # Goodput over the whole run, including the drain after arrivals stop.
    elapsed = max(o.ended for o in outcomes)
    return {
        "classes": rows,
        "goodput": good / elapsed / capacity,
        "rt_shed_while_batch_admitted": rt_shed_during_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    fleet, urls = start_fleet(2)
    results: dict[tuple[str, float], dict[str, object]] = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            gateways: dict[str, tuple[Proc, dict[str, str]]] = {}
            for mode, on in (("classes", True), ("fifo", False)):
                cfg = tmp / f"{mode}.yaml"
                cfg.write_text(gateway_config(urls, on))
                gw = forebay_serve(
                    cfg, tmp / mode, {"FOREBAY_ADMIN_KEY": ADMIN}, tmp / f"{mode}.log"
                )
                gateways[mode] = (gw, make_keys(gw))
            try:
                url = f"{gateways['classes'][0].url}/v1/chat/completions"
                capacity = asyncio.run(
                    closed_loop(url, gateways["classes"][1]["batch"], 2 * 2 * SLOTS_PER_SERVER, 15)
                )
                print(f"capacity: {capacity:.1f} completed requests/s", flush=True)
                for factor in (1.0, 2.0, 3.0):
                    for mode, (gw, keys) in gateways.items():
                        time.sleep(5)  # let the fleet drain between runs
                        outcomes = asyncio.run(
                            open_loop(
                                f"{gw.url}/v1/chat/completions",
                                keys,
                                factor * capacity,
                                args.seconds,
                            )
                        )
                        results[(mode, factor)] = summarize(outcomes, capacity)
                        print(mode, factor, results[(mode, factor)], flush=True)
            finally:
                for gw, _ in gateways.values():
                    gw.stop()
    finally:
        fleet.terminate()
        fleet.wait(10)
    print()
    print(f"Capacity (saturated, measured): {capacity:.1f} requests/s")
    print()
    print(
        "| load | mode | class | sent | shed | p50 TTFT ms | p99 TTFT ms | TTFT SLO met "
        "| goodput / capacity | realtime shed while batch admitted |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (mode, factor), res in results.items():
        for cls, row in res["classes"].items():  # type: ignore[attr-defined]
            goodput = float(res["goodput"])  # type: ignore[arg-type]
            print(
                f"| {factor:.0f}x | {mode} | {cls} | {row['sent']} | {row['shed']} "
                f"| {row['p50']:.0f} | {row['p99']:.0f} | {row['attainment'] * 100:.1f}% "
                f"| {goodput * 100:.0f}% | {res['rt_shed_while_batch_admitted']} |"
            )


if __name__ == "__main__":
    main()
