"""The protocol cells of bench/overhead.py: which inbound API meets which upstream.

A flow is one path through the gateway: the client's protocol (what the load
generator sends, to which route) and the protocol of the deployment the model
alias points at. Same protocol both ends, the gateway relays bytes (`chat`,
`messages`, `responses`); different ones, it translates (`messages-to-chat`,
`responses-to-chat`). Every flow is compared with `chat` measured in the same
round, and its latency with the zero upstream answering directly in the
protocol the gateway itself speaks to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PROMPT_TEXT = "Say hello in one short sentence."
PROMPT = [{"role": "user", "content": PROMPT_TEXT}]
MAX_TOKENS = 16

# The upstream paths of each protocol on bench/zero_upstream.py (and Forebay's routes).
PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
}


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    inbound: str  # the client's protocol: chat / messages / responses
    upstream: str  # the deployment's protocol
    model: str  # the alias in the benchmark's forebay.yaml

    @property
    def path(self) -> str:
        return PATHS[self.inbound]

    @property
    def translated(self) -> bool:
        return self.inbound != self.upstream


FLOWS = {
    f.name: f
    for f in (
        Flow("chat", "chat", "chat", "bench"),
        Flow("messages", "messages", "messages", "bench-anthropic"),
        Flow("responses", "responses", "responses", "bench-openai"),
        Flow("messages-to-chat", "messages", "chat", "bench"),
        Flow("responses-to-chat", "responses", "chat", "bench"),
    )
}
LABELS = {
    "chat": "Chat → Chat (relay)",
    "messages": "Messages → Anthropic (relay)",
    "responses": "Responses → OpenAI Responses (relay)",
    "messages-to-chat": "Messages → Chat (translated)",
    "responses-to-chat": "Responses → Chat (translated)",
}


def body(protocol: str, model: str, stream: bool) -> str:
    """The request of `protocol` every cell sends: one short user turn, 16 tokens."""
    if protocol == "chat":
        obj: dict[str, object] = {"model": model, "messages": PROMPT, "max_tokens": MAX_TOKENS}
        if stream:
            obj |= {"stream": True, "stream_options": {"include_usage": True}}
    elif protocol == "messages":
        obj = {"model": model, "max_tokens": MAX_TOKENS, "messages": PROMPT}
        if stream:
            obj["stream"] = True
    else:
        # store: false, so a cell measures the relay, not Forebay's stored responses.
        obj = {"model": model, "input": PROMPT_TEXT, "max_output_tokens": MAX_TOKENS}
        obj["store"] = False
        if stream:
            obj["stream"] = True
    return json.dumps(obj)


def deployments_yaml(upstream_port: int, key: str) -> str:
    """The aliases of the relayed flows besides Chat's `bench`: an Anthropic
    deployment and an OpenAI one (which speaks Chat and Responses), both on the
    zero upstream."""
    price = "        price: {input_per_million: 1.0, output_per_million: 2.0}\n"
    return (
        "  bench-anthropic:\n"
        "    kind: chat\n"
        "    deployments:\n"
        "      - name: zero-anthropic\n"
        "        provider: anthropic\n"
        f"        base_url: http://127.0.0.1:{upstream_port}\n"
        "        model: zero\n"
        f"        api_key: {key}\n" + price + "  bench-openai:\n"
        "    kind: chat\n"
        "    deployments:\n"
        "      - name: zero-openai\n"
        "        provider: openai\n"
        f"        base_url: http://127.0.0.1:{upstream_port}/v1\n"
        "        model: zero\n"
        f"        api_key: {key}\n" + price
    )


def unavailable(status: int, answer: bytes) -> str | None:
    """Why a flow cannot be measured, from one probe request's answer (None: it can)."""
    if status == 200:
        return None
    if status in (404, 405) and b"model" not in answer:
        return "not available (route missing)"
    return f"not available (HTTP {status}: {answer[:160].decode(errors='replace')})"


def parse(names: str) -> list[Flow]:
    flows = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if name not in FLOWS:
            raise SystemExit(f"--protocols: unknown {name!r}; choose from {', '.join(FLOWS)}")
        flows.append(FLOWS[name])
    if "chat" not in {f.name for f in flows}:
        flows.insert(0, FLOWS["chat"])  # every flow is compared with it
    return flows
