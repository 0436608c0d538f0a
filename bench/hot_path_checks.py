"""What the per-request checks of issue 8 (items 1, 2 and 9) cost, in CPU time
per call (best of 5 runs), on this machine:

* the nesting-depth check in `validate.parse_json` on a typical chat body (two
  C-level counts; the walk runs only on bodies with more than 128 brackets),
  and on a 200-message body that is walked;
* redacting one SSE content event and one non-stream body with 1 and with 5
  configured secrets (one Aho-Corasick pass when nothing is found), and an
  event with HTML escapes (\\u003c) that must be decoded first;
* the adaptive limit's bookkeeping for one successful try.

    .venv/bin/python -m bench.hot_path_checks
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

import orjson

from forebay.gateway.health import AdaptiveLimit
from forebay.gateway.redact import Redactor
from forebay.gateway.validate import parse_json

CHAT = orjson.dumps(
    {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 20},
            {"role": "user", "content": "What is the weather in Paris today? " * 5},
        ],
        "max_tokens": 256,
        "stream": True,
    }
)
LONG_CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100}] * 200})
EVENT = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-123",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": " the quick"}, "finish_reason": None}],
        }
    )
    + b"\n\n"
)
HTML_EVENT = EVENT.replace(b" the quick", b"\\u003cdiv\\u003e")
BODY = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "lorem " * 200}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 200},
    }
)
SECRETS = [
    "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2,
    "sk-ant-api03-" + "x9Y8z7W6v5U4t3S2r1Q0" * 3,
    "azurekey0123456789abcdef0123456789",
    "Bearer ghp_abcdefghijklmnopqrstuvwxyz0123",
    "2024-06-01",
]


def per_call_us(fn: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5, timer=time.process_time))
    return best / number * 1e6


def main() -> None:
    rows = [
        ("parse_json, typical chat body", lambda: parse_json(CHAT, 1 << 24), 50_000),
        ("orjson.loads alone, same body", lambda: orjson.loads(CHAT), 50_000),
        ("parse_json, 200-message body (walked)", lambda: parse_json(LONG_CHAT, 1 << 24), 500),
        ("orjson.loads alone, same body", lambda: orjson.loads(LONG_CHAT), 500),
    ]
    for count in (1, 5):
        redactor = Redactor(SECRETS[:count])
        rows += [
            (f"redact SSE event, {count} secret(s)", lambda r=redactor: r.redact(EVENT), 100_000),
            (f"redact 1.3 KB body, {count} secret(s)", lambda r=redactor: r.redact(BODY), 50_000),
            (
                f"redact event with \\u003c, {count} secret(s)",
                lambda r=redactor: r.redact(HTML_EVENT),
                20_000,
            ),
        ]
    limit = AdaptiveLimit(limit=64, ceiling=64)
    clock = iter(range(10**9))
    rows.append(
        (
            "adaptive limit, one success",
            lambda: limit.observe(0.5, 120.0, "tenant", next(clock) / 1000),
            100_000,
        )
    )
    for label, fn, number in rows:
        print(f"{label:<44} {per_call_us(fn, number):8.2f} us")


if __name__ == "__main__":
    main()
