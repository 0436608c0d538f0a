"""What the ledger spool costs each request on the event loop: the `begun`,
`routed` and `done` records (encode + one os.write each, see
src/forebay/ledger/spool.py), against the encoding alone.

    .venv/bin/python -m bench.spool_cost [--requests 200000] [--repeat 5]

Writes to a spool in a temporary directory (page cache, no fsync, as in
production) with the default 1 MiB segments; every 500 requests the segments
are settled as the ledger writer would after a batch, so rotation and deletion
are in the figures. Prints the median over --repeat runs, in µs per request.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from forebay.ledger.events import UsageEvent
from forebay.ledger.records import BEGUN, ROUTED, done_line, line
from forebay.ledger.spool import Spool


def _event(i: int) -> UsageEvent:
    return UsageEvent(
        ts=time.time(),
        request_id=f"req_{i:024x}",
        tenant_id="t_0123456789abcdef",
        key_id="key_0123456789abcdef",
        endpoint="chat/completions",
        alias="llama-8b",
        deployment="vllm-a",
        route_reason="least_loaded: vllm-a (openai-mini skipped: cooling down after 429)",
        stream=True,
        prompt_tokens=812,
        completion_tokens=256,
        tokens_estimated=False,
        cost_usd=0.000031,
        energy_wh=0.042,
        status=200,
        error_type=None,
        ttft_ms=84.2,
        latency_ms=2210.5,
        config_revision="3f2a9c1d0b7e",
        traffic_class="interactive",
    )


def _begun(e: UsageEvent) -> dict[str, object]:
    return {
        "request_id": e.request_id,
        "ts": e.ts,
        "tenant_id": e.tenant_id,
        "key_id": e.key_id,
        "endpoint": e.endpoint,
        "alias": e.alias,
        "stream": e.stream,
        "traffic_class": e.traffic_class,
        "config_revision": e.config_revision,
    }


def _routed(e: UsageEvent) -> dict[str, object]:
    return {"request_id": e.request_id, "deployment": e.deployment, "route_reason": e.route_reason}


def spooled(events: list[UsageEvent], directory: Path) -> float:
    spool = Spool(directory).open()
    segments: list[int] = []
    t = time.perf_counter()
    for i, e in enumerate(events):
        spool.begin(e.request_id, _begun(e))
        spool.routed(e.request_id, _routed(e))
        segments.append(spool.done(e))
        if i % 500 == 499:
            spool.settle(segments)
            segments = []
    elapsed = time.perf_counter() - t
    spool.settle(segments)
    spool.close()
    return elapsed / len(events) * 1e6


def encoded_only(events: list[UsageEvent]) -> float:
    t = time.perf_counter()
    for e in events:
        line(BEGUN, _begun(e))
        line(ROUTED, _routed(e))
        done_line(e)
    return (time.perf_counter() - t) / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = [_event(i) for i in range(args.requests)]
    full, enc = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            full.append(spooled(events, Path(tmp)))
        enc.append(encoded_only(events))
    record_bytes = len(line(BEGUN, _begun(events[0])) + line(ROUTED, _routed(events[0])))
    record_bytes += len(done_line(events[0]))
    print(f"spool per request (3 records, {record_bytes} bytes): {statistics.median(full):.2f} µs")
    print(f"  of which encoding:                   {statistics.median(enc):.2f} µs")
    print(f"  runs: {', '.join(f'{x:.2f}' for x in full)} µs")


if __name__ == "__main__":
    main()
