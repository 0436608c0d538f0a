"""A loopback server that speaks Anthropic's Messages API as its reference
documents it: POST /v1/messages (JSON, or SSE with message_start,
content_block_start / _delta / _stop, ping, message_delta, message_stop),
POST /v1/messages/count_tokens (its body fields only; the failure models
below fail it too), GET /v1/models, and the error envelope
`{"type": "error", "error": {"type", "message"}, "request_id"}`.

Every request needs `x-api-key` equal to `api_key` (else 401
authentication_error) and an `anthropic-version` header (else 400
invalid_request_error, as Anthropic answers). Behaviour by model name:

  anything else  the last user message's text as the answer; with `tools`, and a
                 last message that is not a tool result, a tool_use block calling
                 the first tool with {"query": <that text>} (stop_reason tool_use)
  thinking       a thinking block (thinking_delta, signature_delta) before the text
  rate-limited   429 rate_limit_error with retry-after: 7 and anthropic-ratelimit-*
  rate-reset     429 without retry-after; the tokens limit at 0, resetting in 30 s
  spend-limit    429 for a spent monthly limit (details.error_code), no retry-after
  overloaded     529 overloaded_error       api-error  500 api_error
  invalid        400 invalid_request_error  forbidden  403 permission_error
  missing        404 not_found_error ("model: missing"), as for a model it does not serve
  stream-error   streams message_start and one delta, then `event: error` (overloaded)
  garbled        200 whose body (or whose every event) is not JSON
  garbled-mid    streams as usual, but its second content_block_delta is not JSON
  drop           closes the connection half-way through the body (streams: after
                 the first events)
  slow-<ms>      answers after <ms> milliseconds
  scripted       follows the server's `script` (tests/support/scripted.py): calls its
                 tool, then answers with the tool's result, as a model driving an agent

Tokens are words. Prompt caching as Anthropic counts it: a block with
`cache_control` ends a cacheable prefix (tools, then system, then messages); the
first request with a prefix reports it as cache_creation_input_tokens, later
ones as cache_read_input_tokens, both outside input_tokens. Every request is
remembered in `seen`, so tests can check what really was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.scripted import ToolScript, anthropic_turn

API_KEY = "sk-ant-test-0123456789abcdefghijklmnop"
MODELS = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"

# count_tokens' body fields (Anthropic's API reference): anything else is refused.
_COUNTED = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
    }
)


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    body: Any


@dataclass
class AnthropicServer:
    api_key: str = API_KEY
    models: tuple[str, ...] = MODELS
    seen: list[Seen] = field(default_factory=list)
    event_gap_s: float = 0.0  # a pause between stream events, so they arrive apart
    script: ToolScript | None = None  # what the `scripted` model does
    _cached: set[str] = field(default_factory=set)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
            ]
        )

    async def _admit(self, request: Request) -> tuple[Any, Response | None]:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        headers = dict(request.headers)
        self.seen.append(
            Seen(request.method, request.url.path, request.url.query, headers, raw, body)
        )
        if headers.get("x-api-key") != self.api_key:
            return body, error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return body, error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if request.method == "POST" and not isinstance(body, dict):
            return body, error(400, "invalid_request_error", "The request body is not valid JSON.")
        return body, None

    async def list_models(self, request: Request) -> Response:
        _, refused = await self._admit(request)
        if refused is not None:
            return refused
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
            for m in self.models
        ]
        page = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        }
        return _json(page)

    async def count_tokens(self, request: Request) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        extra = sorted(set(body) - _COUNTED)
        if extra:
            message = f"{extra[0]}: Extra inputs are not permitted"
            return error(400, "invalid_request_error", message)
        failure = _failure(str(body.get("model")))
        if failure is not None:
            return failure
        blocks = _blocks(body)
        return _json({"input_tokens": sum(_words(b) for b in blocks)})

    async def messages(self, request: Request) -> Response:
        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        missing = [k for k in ("model", "max_tokens", "messages") if k not in body]
        if missing:
            return error(400, "invalid_request_error", f"{missing[0]}: Field required")
        model = str(body["model"])
        failed = _failure(model)
        if failed is not None:
            return failed
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        usage = self._usage(body)
        if model == "scripted":
            if self.script is None:
                return error(500, "api_error", "the test server was given no script")
            blocks, stop = anthropic_turn(self.script, body)
        else:
            blocks, stop = _answer(body)
        if body.get("stream"):
            events = _events(model, blocks, stop, usage)
            relay = _sse(events, model, self.event_gap_s)
            return StreamingResponse(relay, media_type="text/event-stream")
        if model == "garbled":
            return Response(b"\x00\xff{not json at all", 200, media_type="application/json")
        out = sum(_words(b) for b in blocks)
        message = _message(model, blocks, stop, {**usage, "output_tokens": out})
        data = orjson.dumps(message)
        if model == "drop":
            return StreamingResponse(_cut(data), headers={"content-length": str(len(data))})
        return Response(data, 200, media_type="application/json")

    def _usage(self, body: dict[str, Any]) -> dict[str, Any]:
        blocks = _blocks(body)
        total = sum(_words(b) for b in blocks)
        marks = [i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")]
        created = read = 0
        if marks:
            prefix = blocks[: marks[-1] + 1]
            key = hashlib.sha256(orjson.dumps(prefix)).hexdigest()
            tokens = sum(_words(b) for b in prefix)
            if key in self._cached:
                read = tokens
            else:
                self._cached.add(key)
                created = tokens
        return {
            "input_tokens": total - created - read,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "output_tokens": 0,
            "service_tier": "standard",
        }


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    request_id = "req_011CTestRequest0123456789"
    envelope = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    }
    return _json(envelope, status, {"request-id": request_id, **(headers or {})})


def _failure(model: str) -> Response | None:
    if model == "rate-limited":
        reset = (datetime.now(UTC) + timedelta(seconds=7)).isoformat(timespec="seconds")
        headers = {
            "retry-after": "7",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
        message = (
            "This request would exceed your organization's rate limit of 50 requests per minute."
        )
        return error(429, "rate_limit_error", message, headers)
    if model == "rate-reset":
        reset = (datetime.now(UTC) + timedelta(seconds=30)).isoformat(timespec="seconds")
        headers = {
            "anthropic-ratelimit-tokens-limit": "80000",
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": reset,
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": reset,
        }
        return error(
            429, "rate_limit_error", "Number of input tokens has exceeded your limit.", headers
        )
    if model == "spend-limit":
        envelope = {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "You have reached your specified API usage limits.",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        }
        return _json(envelope, 429)
    simple = {
        "overloaded": (529, "overloaded_error", "Overloaded"),
        "api-error": (500, "api_error", "Internal server error"),
        "invalid": (400, "invalid_request_error", "messages.0.content: Field required"),
        "forbidden": (403, "permission_error", "Your API key does not have permission."),
        "missing": (404, "not_found_error", "model: missing"),
    }
    if model in simple:
        return error(*simple[model])
    return None


def _blocks(body: dict[str, Any]) -> list[Any]:
    """Everything the prompt is made of, in Anthropic's cache order."""
    out: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    out.extend([{"type": "text", "text": system}] if isinstance(system, str) else system or [])
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        out.extend(
            [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        )
    return out


def _words(block: Any) -> int:
    if not isinstance(block, dict):
        return 0
    if block.get("type") == "tool_use":
        return len(orjson.dumps(block.get("input")).split())
    text = block.get("text") or block.get("thinking") or block.get("description") or ""
    content = block.get("content")
    if isinstance(content, str):
        text += " " + content
    elif isinstance(content, list):
        text += " " + " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return len(str(text).split())


def _last_user(body: dict[str, Any]) -> tuple[str, bool]:
    """The last user message's text, and whether it carries a tool result."""
    for msg in reversed(body.get("messages") or []):
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content, False
        parts = content if isinstance(content, list) else []
        text = " ".join(
            p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"
        )
        results = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_result"]
        if results and not text:
            text = " ".join(
                str(c.get("text", "")) if isinstance(c, dict) else str(c)
                for r in results
                for c in (
                    r["content"] if isinstance(r.get("content"), list) else [r.get("content", "")]
                )
            )
        return text, bool(results)
    return "", False


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    text, answered_tool = _last_user(body)
    tools = body.get("tools") or []
    blocks: list[dict[str, Any]] = []
    if body["model"] == "thinking":
        blocks.append(
            {"type": "thinking", "thinking": f"The user said {text}", "signature": SIGNATURE}
        )
    if tools and not answered_tool:
        call_id = "toolu_01" + hashlib.sha256(text.encode()).hexdigest()[:22]
        blocks.append(
            {"type": "tool_use", "id": call_id, "name": tools[0]["name"], "input": {"query": text}}
        )
        return blocks, "tool_use"
    words = text.split() or ["ok"]
    limit = int(body["max_tokens"])
    blocks.append({"type": "text", "text": " ".join(words[:limit])})
    return blocks, "max_tokens" if len(words) > limit else "end_turn"


def _message(
    model: str, content: list[Any], stop: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": "msg_01TestMessage0123456789",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _events(
    model: str, blocks: list[dict[str, Any]], stop: str, usage: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    start = _message(model, [], None, {**usage, "output_tokens": 1})
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for i, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [
                {"type": "text_delta", "text": w if j == 0 else " " + w}
                for j, w in enumerate(words)
            ]
        elif kind == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            empty = {**block, "input": {}}
            args = orjson.dumps(block["input"]).decode()
            cut = len(args) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": args[:cut]},
                {"type": "input_json_delta", "partial_json": args[cut:]},
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": empty},
            )
        )
        if i == 0:
            events.append(("ping", {"type": "ping"}))
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out = sum(_words(b) for b in blocks)
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": out},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


async def _sse(
    events: list[tuple[str, dict[str, Any]]], model: str, gap_s: float
) -> AsyncIterator[bytes]:
    deltas = 0
    for n, (name, data) in enumerate(events):
        if gap_s and n:
            await asyncio.sleep(gap_s)
        deltas += name == "content_block_delta"
        if model == "garbled" or (model == "garbled-mid" and deltas == 2):
            yield f"event: {name}\ndata: {{not json {n}\n\n".encode()
            continue
        if model == "drop" and n == 3:
            raise ConnectionResetError("the test upstream drops the stream on purpose")
        if model == "stream-error" and n == 4:
            failure = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }
            yield b"event: error\ndata: " + orjson.dumps(failure) + b"\n\n"
            return
        yield f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def _cut(data: bytes) -> AsyncIterator[bytes]:
    yield data[: len(data) // 2]
    await asyncio.sleep(0.01)
    raise ConnectionResetError("the test upstream drops the connection on purpose")


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status, headers, media_type="application/json")
