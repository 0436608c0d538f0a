"""The protocol flows against the Chat relay, paired: one gateway, short cells.

bench/overhead.py measures each cell for seconds, one after another, so on a
shared machine whose speed drifts by 2x within minutes (as these do) a flow
and the Chat relay it is compared with may run at different speeds. Here
every round runs the Chat relay and each flow for a few seconds on the same
gateway, in an order shuffled per round, and a flow's figure is the median
over rounds of its ratio to (and difference from) the Chat relay of the same
round: the drift between rounds cancels, and the one within a round averages
out over the shuffles.

    .venv/bin/python -m bench.flow_pairs --rounds 10 --duration 3 --modes stream
    .venv/bin/python -m bench.flow_pairs --baseline main~5   # the same, at another revision too

CPU is the gateway process's (utime + stime) per request, from bench/loadgen.py.
Raw numbers go to bench/results/flow-pairs-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.overhead import (
    ROOT,
    Service,
    checkout,
    create_tenant_key,
    forebay_config,
    load,
    machine,
    start_forebay,
    start_upstream,
)
from bench.overhead_flows import FLOWS, LABELS, Flow, parse

GOALS = {"messages": 1.10, "responses": 1.10}  # CPU ÷ Chat relay, same protocol both ends
GOAL_US = {"messages-to-chat": 300.0, "responses-to-chat": 300.0}  # CPU - Chat relay


@dataclass
class Target:
    name: str  # "now", or the baseline revision
    gateway: Service
    token: str
    cells: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def targets(tmp: Path, args: argparse.Namespace, upstream: Service) -> Iterator[list[Target]]:
    config = forebay_config(tmp, upstream.port)
    started: list[Target] = []
    worktree: Path | None = None
    try:
        sources: list[tuple[str, Path | None]] = [("now", None)]
        if args.baseline:
            worktree = checkout(args.baseline, tmp / "baseline")
            sources.append((args.baseline, worktree))
        for name, source in sources:
            svc = start_forebay(
                config, tmp / f"data-{len(started)}", tmp / f"fb-{len(started)}.log", source
            )
            started.append(Target(name, svc, create_tenant_key(svc.port)))
        yield started
    finally:
        for t in started:
            t.gateway.stop()
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )


def cell(t: Target, flow: Flow, mode: str, upstream: Service, args: argparse.Namespace) -> float:
    url = f"http://127.0.0.1:{t.gateway.port}{flow.path}"
    pids = t.gateway.pids()
    res = load(url, t.token, mode, 1, args, [*pids, upstream.proc.pid], flow.inbound, flow.model)
    n = int(res["requests"])
    if res["errors"]:
        raise SystemExit(
            f"{t.name} {flow.name} {mode}: {res['errors']} errors {res['error_kinds']}"
        )
    us = sum(float(res["cpu_s"][str(p)]) for p in pids) * 1e6 / n
    t.cells.append({"mode": mode, "flow": flow.name, "requests": n, "cpu_us": us})
    return us


def summary(t: Target, mode: str, rounds: int) -> list[dict[str, Any]]:
    by_round: list[dict[str, float]] = [{} for _ in range(rounds)]
    mine = [c for c in t.cells if c["mode"] == mode]
    per = len(mine) // rounds
    for i, c in enumerate(mine):
        by_round[i // per][c["flow"]] = c["cpu_us"]
    rows = []
    for name in by_round[0]:
        chat = [r["chat"] for r in by_round]
        own = [r[name] for r in by_round]
        ratios = [o / c for o, c in zip(own, chat, strict=True)]
        diffs = [o - c for o, c in zip(own, chat, strict=True)]
        rows.append(
            {
                "flow": name,
                "cpu_us_median": statistics.median(own),
                "ratio_median": statistics.median(ratios),
                "ratio_quartiles": statistics.quantiles(ratios, n=4) if rounds > 1 else ratios,
                "diff_us_median": statistics.median(diffs),
            }
        )
    return rows


def verdict(flow: str, row: dict[str, Any]) -> str:
    if flow in GOALS:
        return f"≤ {GOALS[flow]:.2f}x: {'hit' if row['ratio_median'] <= GOALS[flow] else 'MISS'}"
    if flow in GOAL_US:
        ok = row["diff_us_median"] <= GOAL_US[flow]
        return f"≤ +{GOAL_US[flow]:.0f} µs: {'hit' if ok else 'MISS'}"
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds a cell")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--modes", default="non-stream,stream")
    ap.add_argument("--protocols", default=",".join(FLOWS))
    ap.add_argument("--chunks", type=int, default=20, help="content chunks a streamed answer")
    ap.add_argument("--baseline", help="also measure Forebay at this git revision")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    flows = parse(args.protocols)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rng = random.Random(args.seed)
    info = machine()
    started = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        upstream = start_upstream(tmp, args.chunks)
        try:
            with targets(tmp, args, upstream) as ts:
                for mode in modes:
                    for rnd in range(args.rounds):
                        for t in rng.sample(ts, len(ts)):
                            order = rng.sample(flows, len(flows))
                            for flow in order:
                                us = cell(t, flow, mode, upstream, args)
                                line = f"{mode:10s} round {rnd} {t.name:8s} {flow.name:18s}"
                                print(f"{line} {us:7.0f} µs/req", flush=True)
                report = {
                    "args": vars(args),
                    "info": info,
                    "targets": {t.name: {m: summary(t, m, args.rounds) for m in modes} for t in ts},
                    "cells": {t.name: t.cells for t in ts},
                }
        finally:
            upstream.stop()
    out = ROOT / "bench" / "results" / f"flow-pairs-{started}.json"
    out.write_text(json.dumps(report, indent=1))
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("\n" + "; ".join(f"{k} {v}" for k, v in info.items()))
    for name, per_mode in report["targets"].items():
        for mode, rows in per_mode.items():
            print(f"\n{name}, {mode}, c=1, {args.rounds} rounds (median of per-round figures)\n")
            print("| flow | gw CPU µs/req | ÷ Chat relay | quartiles | - Chat relay µs | goal |")
            print("|---|---:|---:|---|---:|---|")
            for row in rows:
                q = row["ratio_quartiles"]
                print(
                    f"| {LABELS[row['flow']]} | {row['cpu_us_median']:,.0f} | "
                    f"{row['ratio_median']:.2f}x | {q[0]:.2f}-{q[-1]:.2f} | "
                    f"{row['diff_us_median']:+,.0f} | {verdict(row['flow'], row)} |"
                )
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
