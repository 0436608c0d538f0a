"""The answers of OpenAI's wire (Chat Completions and Responses, whole or
streamed) for the loopback servers of OpenAI's own API and Azure OpenAI
(openai_api_server.py, azure_openai_server.py), which differ in paths,
credentials and error bodies, not in these.

The answer echoes the last user message; tokens are words. Streams follow the
references: chat chunks then `data: [DONE]` (a usage chunk with empty choices
first when stream_options.include_usage); Responses as `event:` / `data:` pairs
from response.created to response.completed, each with its sequence_number.
`azure=True` adds Azure's content-filter annotations (and its first chunk with
empty choices and prompt_filter_results)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

_FILTER = {
    sev: {"filtered": False, "severity": "safe"}
    for sev in ("hate", "self_harm", "sexual", "violence")
}


def last_user_text(body: dict[str, Any]) -> str:
    """From chat `messages` or a Responses `input` (a string or items)."""
    items = body.get("messages")
    if items is None:
        given = body.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
    for item in reversed(items):
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                p.get("text", "") for p in content if p.get("type") in ("text", "input_text")
            )
    return ""


def answer(body: dict[str, Any], *, responses: bool, azure: bool = False) -> Response:
    model = str(body.get("model"))
    text = last_user_text(body)
    words = text.split() or ["ok"]
    prompt = len(text.split()) + 3
    if body.get("stream"):
        events = (
            _responses_events(model, words, prompt)
            if responses
            else _chat_chunks(body, words, prompt, azure)
        )
        return StreamingResponse(_relay(events, model), media_type="text/event-stream")
    obj = _response(model, words, prompt) if responses else _chat(model, words, prompt, azure)
    data = orjson.dumps(obj)
    if model == "garbled":
        data = b"<html><body>502 Bad Gateway</body></html>"
    if model == "drop":
        return StreamingResponse(_cut(data), headers={"content-length": str(len(data))})
    return Response(data, 200, media_type="application/json")


async def delay(model: str) -> None:
    if model.startswith("slow-"):
        await asyncio.sleep(int(model.split("-")[1]) / 1000)


def _usage_chat(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _chat(model: str, words: list[str], prompt: int, azure: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": " ".join(words)},
        "finish_reason": "stop",
    }
    obj: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage_chat(prompt, len(words)),
    }
    if azure:
        choice["content_filter_results"] = _FILTER
        obj["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _FILTER}]
    return obj


def _chat_chunks(
    body: dict[str, Any], words: list[str], prompt: int, azure: bool
) -> Iterator[bytes]:
    model = str(body.get("model"))
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model}
    if azure:
        filters = [{"prompt_index": 0, "content_filter_results": _FILTER}]
        yield _data({**base, "model": "", "choices": [], "prompt_filter_results": filters})
    for i, word in enumerate(words):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
        yield _data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    yield _data({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        yield _data({**base, "choices": [], "usage": _usage_chat(prompt, len(words))})
    yield b"data: [DONE]\n\n"


def _response(
    model: str, words: list[str], prompt: int, status: str = "completed"
) -> dict[str, Any]:
    text = " ".join(words)
    done = status == "completed"
    message = {
        "type": "message",
        "id": "msg_test",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": "resp_test",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [message] if done else [],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + len(words),
        }
        if done
        else None,
    }


def _responses_events(model: str, words: list[str], prompt: int) -> Iterator[bytes]:
    seq = iter(range(10_000))
    pending = _response(model, words, prompt, status="in_progress")
    item = {
        "type": "message",
        "id": "msg_test",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    part = {"type": "output_text", "text": "", "annotations": []}
    text = " ".join(words)
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        (
            "response.content_part.added",
            {"item_id": "msg_test", "output_index": 0, "content_index": 0, "part": part},
        ),
    ]
    for i, word in enumerate(words):
        delta = word if i == 0 else " " + word
        events.append(
            (
                "response.output_text.delta",
                {"item_id": "msg_test", "output_index": 0, "content_index": 0, "delta": delta},
            )
        )
    final = _response(model, words, prompt)
    done_part = {**part, "text": text}
    events += [
        (
            "response.output_text.done",
            {"item_id": "msg_test", "output_index": 0, "content_index": 0, "text": text},
        ),
        (
            "response.content_part.done",
            {"item_id": "msg_test", "output_index": 0, "content_index": 0, "part": done_part},
        ),
        ("response.output_item.done", {"output_index": 0, "item": final["output"][0]}),
        ("response.completed", {"response": final}),
    ]
    for name, data in events:
        event = {"type": name, "sequence_number": next(seq), **data}
        yield f"event: {name}\n".encode() + _data(event)


def _data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _relay(events: Iterator[bytes], model: str) -> AsyncIterator[bytes]:
    for n, event in enumerate(events):
        if model == "drop" and n == 2:
            raise ConnectionResetError("the test upstream drops the stream on purpose")
        yield b"data: {garbled\n\n" if model == "garbled" else event


async def _cut(data: bytes) -> AsyncIterator[bytes]:
    yield data[: len(data) // 2]
    await asyncio.sleep(0.01)
    raise ConnectionResetError("the test upstream drops the connection on purpose")
