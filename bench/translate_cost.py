"""What translating a request costs, in-process: µs of CPU per request.

bench/overhead.py measures whole requests through `forebay serve`; this times
only the protocol work of one request, the same request and answers as there
(a one-turn prompt, the zero upstream's replies with 16 content events), so a
change to a codec shows up without the noise of HTTP, the event loop and the
machine's other tenants. Each flow runs the gateway's own pieces in the order
a request meets them:

* parse: the inbound body's JSON and its parser (validate.parse_request for
  Chat, gateway/messages.parse_messages, the Responses codec's decode_request);
* request: the upstream payload (a copy with the upstream model, or the
  outbound codec's encode_request) and its JSON, as the adapter sends it;
* reply: a whole answer's JSON parsed and metered (relayed), or decoded,
  re-encoded for the client and dumped (translated);
* stream: the upstream's SSE events fed one read at a time to the relay the
  dispatcher uses (SseRelay, PassThroughRelay or TranslatingRelay), and its tail.

Run from the repository root: `.venv/bin/python -m bench.translate_cost`
(a few seconds; `--quick` for fewer iterations).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bench.overhead_flows import LABELS
from bench.overhead_flows import body as flow_body
from bench.zero_upstream import (
    CHAT_BODY,
    chat_events,
    messages_body,
    messages_events,
    responses_body,
    responses_events,
)
from forebay.gateway.messages import parse_messages
from forebay.gateway.metering import usage_counts
from forebay.gateway.redact import Redactor
from forebay.gateway.sse import SseRelay
from forebay.gateway.translate import PassThroughRelay, TranslatingRelay, Translation, reply_bytes
from forebay.gateway.validate import ParsedRequest, parse_json, parse_request
from forebay.protocols.registry import codec_for
from forebay.upstreams.base import Endpoint, WireProtocol

LIMIT = 1 << 20
CHUNKS = 16
REDACTOR = Redactor(["sk-upstream-0123456789abcdef"])
CHAT = codec_for(WireProtocol.OPENAI_CHAT)
MESSAGES = codec_for(WireProtocol.ANTHROPIC_MESSAGES)
RESPONSES = codec_for(WireProtocol.OPENAI_RESPONSES)


def _parse_chat(raw: bytes) -> ParsedRequest:
    return parse_request(Endpoint.CHAT, parse_json(raw, LIMIT))


def _parse_messages(raw: bytes) -> ParsedRequest:
    return parse_messages(parse_json(raw, LIMIT))


def _parse_responses(raw: bytes) -> ParsedRequest:
    """Until POST /v1/responses is wired: its codec's decode, kept as the
    pipeline keeps Messages' canonical form."""
    obj = parse_json(raw, LIMIT)
    canonical = RESPONSES.decode_request(obj)
    return ParsedRequest(
        Endpoint.RESPONSES,
        obj,
        canonical.model,
        canonical.stream,
        include_usage=False,
        protocol=WireProtocol.OPENAI_RESPONSES,
        canonical=canonical,
    )


@dataclass(frozen=True)
class Case:
    name: str
    inbound: str
    parse: Callable[[bytes], ParsedRequest]
    reply: bytes  # the upstream's whole answer
    events: list[bytes]  # the upstream's stream, one read per event
    translation: Translation | None  # None: relayed


CASES = [
    Case("chat", "chat", _parse_chat, CHAT_BODY, chat_events(CHUNKS), None),
    Case(
        "messages",
        "messages",
        _parse_messages,
        messages_body(),
        messages_events(CHUNKS),
        None,
    ),
    Case(
        "responses",
        "responses",
        _parse_responses,
        responses_body(),
        responses_events(CHUNKS),
        None,
    ),
    Case(
        "messages-to-chat",
        "messages",
        _parse_messages,
        CHAT_BODY,
        chat_events(CHUNKS),
        Translation(MESSAGES, CHAT, Endpoint.CHAT),
    ),
    Case(
        "responses-to-chat",
        "responses",
        _parse_responses,
        CHAT_BODY,
        chat_events(CHUNKS),
        Translation(RESPONSES, CHAT, Endpoint.CHAT),
    ),
]


def steps(case: Case, stream: bool) -> dict[str, Callable[[], object]]:
    """One request's work, split into the steps timed apart."""
    raw = flow_body(case.inbound, "bench", stream).encode()
    parsed = case.parse(raw)
    t = case.translation

    def request() -> bytes:
        if t is None:
            return orjson.dumps({**parsed.payload, "model": "zero"})
        assert parsed.canonical is not None
        return orjson.dumps(t.outbound.encode_request(parsed.canonical, "zero"))

    def reply() -> bytes:
        body: dict[str, Any] = orjson.loads(case.reply)
        if t is None:
            usage_counts(body.get("usage"))
            return REDACTOR.redact(case.reply)
        return REDACTOR.redact(reply_bytes(t, t.outbound.decode_reply(body)))

    def relay() -> int:
        sse: Any
        if t is not None:
            sse = TranslatingRelay(t, include_usage=True, redactor=REDACTOR)
        elif case.inbound == "chat":
            sse = SseRelay(client_wants_usage=True, redactor=REDACTOR)
        else:
            proto = parsed.protocol
            sse = PassThroughRelay(proto, redactor=REDACTOR)
        n = 0
        for event in case.events:
            n += len(sse.feed(event))
        n += len(sse.tail())
        assert sse.saw_done and sse.usage is not None, case.name
        return n

    return {
        "parse": lambda: case.parse(raw),
        "request": request,
        "reply" if not stream else "stream": relay if stream else reply,
    }


def time_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    """The least over `repeat` runs of the mean µs per call (the run least
    disturbed by the machine's other work), garbage collector off."""
    fn()
    runs = []
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.process_time()
            for _ in range(n):
                fn()
            runs.append((time.process_time() - t0) / n * 1e6)
    finally:
        gc.enable()
    return min(runs)


def measure(n: int, repeat: int) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for case in CASES:
        for mode, stream in (("non-stream", False), ("stream", True)):
            timed = {name: time_us(fn, n, repeat) for name, fn in steps(case, stream).items()}
            timed["total"] = sum(timed.values())
            out.setdefault(case.name, {})[mode] = timed
    return out


def render(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        f"µs of CPU per request (best of runs; stream: {CHUNKS} content events); "
        "vs chat = total minus the Chat relay's",
        "",
        "| flow | mode | parse | request | reply / stream | total | vs chat |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, modes in results.items():
        for mode, t in modes.items():
            last = t.get("reply", t.get("stream", 0.0))
            extra = t["total"] - results["chat"][mode]["total"]
            lines.append(
                f"| {LABELS[name]} | {mode} | {t['parse']:.1f} | {t['request']:.1f} | "
                f"{last:.1f} | {t['total']:.1f} | {extra:+.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = ap.parse_args()
    n, repeat = (200, 3) if args.quick else (1000, 9)
    results = measure(n, repeat)
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(results))


if __name__ == "__main__":
    main()
