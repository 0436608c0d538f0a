"""Traffic profiles: a request rate and token-count distributions, typed or from a trace.

A distribution is given as `mean` or `mean:p99` (the p99 prompt drives tail TTFT), or
measured from a JSONL trace whose lines carry `prompt_tokens` and `output_tokens` and,
optionally, a `timestamp` in seconds from which the request rate is derived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import orjson

from forebay.planner.serving import Workload


@dataclass(frozen=True)
class Tokens:
    mean: float
    p99: float

    @classmethod
    def parse(cls, text: str) -> Tokens:
        """`"1024"` or `"1024:4096"` (mean and p99)."""
        parts = text.split(":")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected MEAN or MEAN:P99 tokens, got {text!r}") from None
        if len(values) not in (1, 2) or min(values) < 1:
            raise ValueError(f"expected MEAN or MEAN:P99 tokens (>= 1), got {text!r}")
        mean = values[0]
        p99 = values[1] if len(values) == 2 else mean
        if p99 < mean:
            raise ValueError(f"p99 ({p99:g}) below the mean ({mean:g})")
        return cls(mean, p99)


@dataclass(frozen=True)
class Traffic:
    rps: float
    prompt: Tokens
    output: Tokens

    def workload(self) -> Workload:
        return Workload(self.prompt.mean, self.output.mean, self.prompt.p99)

    @property
    def output_tokens_per_s(self) -> float:
        return self.rps * self.output.mean


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def from_trace(path: Path, rps: float | None = None) -> Traffic:
    """Measure a traffic profile from a JSONL trace; `rps` overrides the trace's rate."""
    prompts: list[float] = []
    outputs: list[float] = []
    stamps: list[float] = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                prompts.append(float(record["prompt_tokens"]))
                outputs.append(float(record["output_tokens"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ValueError(f"{path}:{number}: need prompt_tokens and output_tokens") from None
            if "timestamp" in record:
                stamps.append(float(record["timestamp"]))
    if not prompts:
        raise ValueError(f"{path}: no requests")
    if rps is None:
        span = max(stamps) - min(stamps) if len(stamps) > 1 else 0.0
        if span <= 0:
            raise ValueError(f"{path}: no timestamps to derive a rate from; pass --rps")
        rps = (len(stamps) - 1) / span
    return Traffic(
        rps,
        Tokens(max(1.0, sum(prompts) / len(prompts)), max(1.0, _p99(prompts))),
        Tokens(max(1.0, sum(outputs) / len(outputs)), max(1.0, _p99(outputs))),
    )
