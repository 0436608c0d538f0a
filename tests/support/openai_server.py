"""A small OpenAI-compatible server for tests, whose behaviour is chosen by the
upstream model name a deployment is configured with:

  echo          answers with the last user message; real usage counts
  vision        like echo, and charges what a multimodal model would for the parts it
                cannot read as text: MEDIA_PROMPT_TOKENS per image, audio or file part
  no-usage      like echo, without a usage object
  details-<c>-<r>  like echo, with <c> more prompt tokens, all read from the prompt cache
                (usage.prompt_tokens_details.cached_tokens), and <r> more completion
                tokens, all reasoning (completion_tokens_details.reasoning_tokens)
  fail-500      HTTP 500          fail-503  HTTP 503     fail-429  HTTP 429
  fail-400      HTTP 400 with an OpenAI error envelope
  fail-401      HTTP 401 whose message repeats the bearer token it was sent
  leak-400      HTTP 400 whose message repeats the bearer token it was sent
  slow-<ms>     echo after <ms> milliseconds
  break-stream  streams three chunks, then drops the connection
  mid-error     streams two chunks, then an `{"error": ...}` event (as vLLM does)
  drip-<ms>     streams 50 chunks, <ms> apart (for client aborts)
  tools         with `tools` in the request (and no tool result last), calls the
                first tool with {"city": <last user text>}; after a `tool` message,
                answers "the tool said <its content>"; usage reports
                TOOLS_CACHED prompt tokens read from cache and TOOLS_REASONING
                reasoning tokens
  signed        a reasoning model that signs its tool calls and thinking as Gemini's
                OpenAI-compatibility endpoint and LiteLLM do, and refuses (400) a
                second turn that did not bring them back (tests/support/signed_chat.py);
                signed-garbled: the same with hostile signatures
  scripted      follows the server's `script` (tests/support/scripted.py): calls its
                tool, then answers with the tool's result, as a model driving an agent

Every request is remembered (path, headers, body) so tests can look at what
the gateway really sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.scripted import ToolScript, chat_turn
from tests.support.signed_chat import signed_turn

# What the `vision` model counts per image, audio or file content part.
MEDIA_PROMPT_TOKENS = 1000
TOOLS_CACHED = 2
TOOLS_REASONING = 1
_MEDIA_PARTS = frozenset({"image_url", "input_image", "image", "input_audio", "file", "input_file"})


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    seen: list[Seen] = field(default_factory=list)
    # When set, /metrics reports this many running + waiting requests, as vLLM does.
    reported_load: float | None = None
    script: ToolScript | None = None  # what the `scripted` model does

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ]
        )

    async def _remember(self, request: Request) -> dict[str, Any]:
        body = orjson.loads(await request.body())
        self.seen.append(Seen(request.url.path, dict(request.headers), body))
        return body  # type: ignore[no-any-return]

    async def metrics(self, request: Request) -> Response:
        if self.reported_load is None:
            return Response(b"not found", 404)
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="echo"}} {self.reported_load}\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            'vllm:num_requests_waiting{model_name="echo"} 0.0\n'
        )
        return Response(text.encode(), media_type="text/plain")

    async def models(self, request: Request) -> Response:
        return _json({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        body = await self._remember(request)
        text = ""
        media = 0
        for msg in body.get("messages", []):
            content = msg.get("content")
            if msg.get("role") == "user" and isinstance(content, str):
                text = content
            elif msg.get("role") == "user" and isinstance(content, list):
                text = " ".join(p["text"] for p in content if p.get("type") == "text")
                media += sum(1 for p in content if p.get("type") in _MEDIA_PARTS)
        extra = media * MEDIA_PROMPT_TOKENS if body["model"] == "vision" else 0
        if body["model"] == "tools":
            return _tools_answer(body, text)
        if body["model"] in ("signed", "signed-garbled"):
            turn = signed_turn(body, text)
            if isinstance(turn, str):
                error = {"message": turn, "type": "invalid_request_error", "code": 400}
                return _json({"error": error}, 400)
            return _reply(body, *turn)
        if body["model"] == "scripted":
            if self.script is None:
                return _json({"error": {"message": "the test server was given no script"}}, 500)
            return _reply(body, *chat_turn(self.script, body))
        return await self._answer(request, body, text, chat=True, extra_prompt=extra)

    async def completions(self, request: Request) -> Response:
        body = await self._remember(request)
        prompt = body.get("prompt")
        return await self._answer(
            request, body, prompt if isinstance(prompt, str) else "", chat=False
        )

    async def embeddings(self, request: Request) -> Response:
        body = await self._remember(request)
        failure = _failure(body["model"], request)
        if failure is not None:
            return failure
        # A string, a list of strings, a list of token ids (one input), or a list of them.
        raw = body["input"]
        one = isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int))
        inputs = [raw] if one else raw
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(s)), 1.0, 0.0]}
            for i, s in enumerate(inputs)
        ]
        tokens = sum(len(s.split()) if isinstance(s, str) else len(s) for s in inputs)
        return _json(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _answer(
        self,
        request: Request,
        body: dict[str, Any],
        text: str,
        *,
        chat: bool,
        extra_prompt: int = 0,
    ) -> Response:
        model = body["model"]
        failure = _failure(model, request)
        if failure is not None:
            return failure
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        words = text.split() or ["ok"]
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or len(words)
        words = words[:max_tokens]
        prompt_tokens = len(text.split()) + 3 + extra_prompt
        if body.get("stream"):
            return StreamingResponse(
                self._stream(body, words, prompt_tokens, chat=chat), media_type="text/event-stream"
            )
        reply = " ".join(words)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": reply}
        else:
            choice["text"] = reply
        obj: dict[str, Any] = {
            "id": "cmpl-test",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
        }
        if model != "no-usage":
            obj["usage"] = _usage(model, prompt_tokens, len(words))
        return _json(obj)

    async def _stream(
        self, body: dict[str, Any], words: list[str], prompt_tokens: int, *, chat: bool
    ) -> AsyncIterator[bytes]:
        model = body["model"]
        if model.startswith("drip-"):
            words = [f"w{i}" for i in range(50)]
        delay = int(model.split("-")[1]) / 1000 if model.startswith("drip-") else 0.0
        for i, word in enumerate(words):
            if model == "break-stream" and i == 3:
                raise ConnectionResetError("test upstream drops the stream on purpose")
            if model == "mid-error" and i == 2:
                error = {"message": "the engine died mid-generation", "type": "internal_error"}
                yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
                return
            piece = word if i == 0 else " " + word
            choice: dict[str, Any] = {"index": 0, "finish_reason": None}
            if chat:
                choice["delta"] = (
                    {"content": piece} if i else {"role": "assistant", "content": piece}
                )
            else:
                choice["text"] = piece
            chunk = {
                "id": "cmpl-test",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [choice],
            }
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            if delay:
                await asyncio.sleep(delay)
        final: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        final["delta" if chat else "text"] = {} if chat else ""
        yield (
            b"data: "
            + orjson.dumps(
                {
                    "id": "cmpl-test",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [final],
                }
            )
            + b"\n\n"
        )
        opts = body.get("stream_options") or {}
        if opts.get("include_usage") and model != "no-usage":
            usage = _usage(model, prompt_tokens, len(words))
            yield (
                b"data: "
                + orjson.dumps(
                    {
                        "id": "cmpl-test",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
                + b"\n\n"
            )
        yield b"data: [DONE]\n\n"


def _usage(model: str, prompt: int, completion: int) -> dict[str, Any]:
    """OpenAI's usage object; `details-<c>-<r>` models add cached and reasoning tokens
    the way OpenAI reports them: as parts of prompt_tokens and completion_tokens."""
    if not model.startswith("details-"):
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    cached, reasoning = (int(n) for n in model.split("-")[1:3])
    prompt, completion = prompt + cached, completion + reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tools_answer(body: dict[str, Any], text: str) -> Response:
    """A tool call, or the answer to a tool result, with usage details."""
    messages = body.get("messages") or [{}]
    last = messages[-1]
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if body.get("tools") and last.get("role") != "tool":
        name = body["tools"][0]["function"]["name"]
        args = orjson.dumps({"city": text}).decode()
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}
        message["tool_calls"] = [call]
        finish = "tool_calls"
    else:
        message["content"] = f"the tool said {last.get('content')}"
        finish = "stop"
    return _reply(body, message, finish)


def _reply(body: dict[str, Any], message: dict[str, Any], finish: str) -> Response:
    """One assistant message (text or tool calls), whole or streamed, with usage
    details; the model name in the answer is the one asked for."""
    messages = body.get("messages") or [{}]
    words = 5 if message.get("tool_calls") else len(str(message["content"]).split())
    prompt = sum(len(str(m.get("content") or "").split()) for m in messages) + 10
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": words,
        "total_tokens": prompt + words,
        "prompt_tokens_details": {"cached_tokens": TOOLS_CACHED},
        "completion_tokens_details": {"reasoning_tokens": TOOLS_REASONING},
    }
    model = str(body["model"])
    if not body.get("stream"):
        choice = {"index": 0, "message": message, "finish_reason": finish}
        obj = {"id": "cmpl-tools", "object": "chat.completion", "created": 1, "model": model}
        return _json({**obj, "choices": [choice], "usage": usage})
    relay = _tools_stream(model, message, finish, usage)
    return StreamingResponse(relay, media_type="text/event-stream")


async def _tools_stream(
    model: str, message: dict[str, Any], finish: str, usage: dict[str, Any]
) -> AsyncIterator[bytes]:
    head = {"id": "cmpl-tools", "object": "chat.completion.chunk", "created": 1, "model": model}

    def chunk(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return b"data: " + orjson.dumps({**head, "choices": [choice], **extra}) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    if message.get("reasoning_content"):  # the text, then its signed block (LiteLLM's)
        yield chunk({"reasoning_content": message["reasoning_content"]})
        yield chunk({"thinking_blocks": message["thinking_blocks"]})
    for n, call in enumerate(message.get("tool_calls") or ()):
        args = call["function"]["arguments"]
        first = {"index": n, "id": call["id"], "type": "function"}
        first["function"] = {"name": call["function"]["name"], "arguments": ""}
        if "extra_content" in call:  # Gemini's: on the call's first fragment
            first["extra_content"] = call["extra_content"]
        yield chunk({"tool_calls": [first]})
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            yield chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
    if not message.get("tool_calls"):
        for i, word in enumerate(message["content"].split()):
            yield chunk({"content": word if i == 0 else " " + word})
    yield chunk({}, finish)
    yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")


def _failure(model: str, request: Request) -> Response | None:
    if model in ("fail-500", "fail-503"):
        return Response(b"internal failure", int(model[-3:]))
    if model == "fail-429":
        return Response(b'{"error":{"message":"slow down"}}', 429, {"retry-after": "7"})
    if model == "fail-400":
        return _json(
            {
                "error": {
                    "message": "This model's maximum context length is 8 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": None,
                }
            },
            400,
        )
    if model in ("fail-401", "leak-400"):
        token = request.headers.get("authorization", "")
        message = f"Incorrect API key provided: {token}"
        return _json({"error": {"message": message}}, int(model[-3:]))
    return None
