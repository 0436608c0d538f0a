"""The answers of OpenAI's wire (Chat Completions and Responses, whole or
streamed) for the loopback servers of OpenAI's own API and Azure OpenAI
(openai_api_server.py, azure_openai_server.py), which differ in paths,
credentials and error bodies, not in these.

The answer echoes the last user message; tokens are words. Streams follow the
references: chat chunks then `data: [DONE]` (a usage chunk with empty choices
first when stream_options.include_usage); Responses as `event:` / `data:` pairs
from response.created to response.completed, each with its sequence_number.
`azure=True` adds Azure's content-filter annotations (and its first chunk with
empty choices and prompt_filter_results).

Models with a behaviour of their own (any other echoes):
  tools             with `tools` and no tool result last, calls the first tool
                    with {"city": <last user text>} (chat `tool_calls`, Responses a
                    `function_call` item, call id CALL_ID); after a tool result
                    (chat `tool` message, Responses `function_call_output` item)
                    answers "the tool said <its output>"
  details-<c>-<r>   echo, with <c> more input tokens all read from the prompt cache
                    and <r> more output tokens all reasoning, as OpenAI reports them
                    (cached_tokens / reasoning_tokens are parts of the totals)
  mid-error         streams the first word, then the wire's error: chat
                    `data: {"error": {...}}`, Responses `event: error`
                    (type, code, message, param, sequence_number)
  garbled-mid       streams as usual, but the sixth event's data is not JSON (of a
                    Responses stream, the second text delta)"""

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


CALL_ID = "call_test0001"


def last_user_text(body: dict[str, Any]) -> str:
    """From chat `messages` or a Responses `input` (a string or items)."""
    items = _items(body)
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


def _items(body: dict[str, Any]) -> list[Any]:
    items = body.get("messages")
    if items is None:
        given = body.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
    return list(items)


def _tool_output(body: dict[str, Any]) -> str | None:
    """The tool result the request ends with, if it does."""
    items = _items(body)
    last = items[-1] if items else {}
    if not isinstance(last, dict):
        return None
    if last.get("role") == "tool":
        content = last.get("content")
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(content)
    if last.get("type") == "function_call_output":
        return str(last.get("output"))
    return None


def _tool_call(body: dict[str, Any]) -> dict[str, str] | None:
    """The call the `tools` model makes: {"name", "arguments"}."""
    tools = body.get("tools") or []
    if body.get("model") != "tools" or not tools or _tool_output(body) is not None:
        return None
    first = tools[0]
    name = first["function"]["name"] if "function" in first else first["name"]
    return {"name": name, "arguments": orjson.dumps({"city": last_user_text(body)}).decode()}


def answer(
    body: dict[str, Any],
    *,
    responses: bool,
    azure: bool = False,
    scripted: tuple[str, dict[str, str] | None] | None = None,
) -> Response:
    """`scripted`: the (text, call) a script chose (scripted.responses_turn)."""
    model = str(body.get("model"))
    text = last_user_text(body)
    result = _tool_output(body) if model == "tools" else None
    if result is not None:
        text = f"the tool said {result}"
    prompt = len(text.split()) + 3
    call = _tool_call(body)
    if scripted is not None:
        text, call = scripted
    words = text.split() or ["ok"]
    if body.get("stream"):
        events = (
            _responses_events(model, words, prompt, call, _echo(body))
            if responses
            else _chat_chunks(body, words, prompt, azure, call)
        )
        return StreamingResponse(_relay(events, model), media_type="text/event-stream")
    obj = (
        _response(model, words, prompt, call=call, echo=_echo(body))
        if responses
        else _chat(model, words, prompt, azure, call)
    )
    data = orjson.dumps(obj)
    if model == "garbled":
        data = b"<html><body>502 Bad Gateway</body></html>"
    if model == "drop":
        return StreamingResponse(_cut(data), headers={"content-length": str(len(data))})
    return Response(data, 200, media_type="application/json")


async def delay(model: str) -> None:
    if model.startswith("slow-"):
        await asyncio.sleep(int(model.split("-")[1]) / 1000)


def _counts(model: str, prompt: int, completion: int) -> tuple[int, int, int, int]:
    """(input, output, cached, reasoning) as OpenAI counts them."""
    if not model.startswith("details-"):
        return prompt, completion, 0, 0
    cached, reasoning = (int(n) for n in model.split("-")[1:3])
    return prompt + cached, completion + reasoning, cached, reasoning


def _usage_chat(model: str, prompt: int, completion: int) -> dict[str, Any]:
    prompt, completion, cached, reasoning = _counts(model, prompt, completion)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _chat(
    model: str, words: list[str], prompt: int, azure: bool, call: dict[str, str] | None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": " ".join(words)}
    if call is not None:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": CALL_ID, "type": "function", "function": call}],
        }
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": "stop" if call is None else "tool_calls",
    }
    out = len(words) if call is None else 5
    obj: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage_chat(model, prompt, out),
    }
    if azure:
        choice["content_filter_results"] = _FILTER
        obj["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _FILTER}]
    return obj


def _chat_chunks(
    body: dict[str, Any],
    words: list[str],
    prompt: int,
    azure: bool,
    call: dict[str, str] | None,
) -> Iterator[bytes]:
    model = str(body.get("model"))
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    if azure:
        filters = [{"prompt_index": 0, "content_filter_results": _FILTER}]
        yield _data({**base, "model": "", "choices": [], "prompt_filter_results": filters})
    if call is not None:
        args = call["arguments"]
        head: dict[str, Any] = {"index": 0, "id": CALL_ID, "type": "function"}
        head["function"] = {"name": call["name"], "arguments": ""}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [head]})
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        for i, word in enumerate(words):
            if model == "mid-error" and i == 1:
                error = {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
                yield _data({"error": error})
                return
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
            yield chunk(delta)
    yield chunk({}, "stop" if call is None else "tool_calls")
    if (body.get("stream_options") or {}).get("include_usage"):
        out = len(words) if call is None else 5
        yield _data({**base, "choices": [], "usage": _usage_chat(model, prompt, out)})
    yield b"data: [DONE]\n\n"


# The request fields a Response repeats, with the values OpenAI's reference
# gives them when the request left them out.
_ECHOED: dict[str, Any] = {
    "background": False,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] if body.get(k) is not None else v for k, v in _ECHOED.items()}


def _response(
    model: str,
    words: list[str],
    prompt: int,
    status: str = "completed",
    call: dict[str, str] | None = None,
    echo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    done = status == "completed"
    out = len(words) if call is None else 5
    tokens, generated, cached, reasoning = _counts(model, prompt, out)
    return {
        "id": "resp_test",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [_output_item(words, call, "completed")] if done else [],
        "usage": {
            "input_tokens": tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": generated,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": tokens + generated,
        }
        if done
        else None,
        **(echo or _ECHOED),
    }


def _output_item(words: list[str], call: dict[str, str] | None, status: str) -> dict[str, Any]:
    if call is not None:
        return {
            "type": "function_call",
            "id": "fc_test",
            "call_id": call.get("call_id", CALL_ID),
            "name": call["name"],
            "arguments": call["arguments"] if status == "completed" else "",
            "status": status,
        }
    content = [{"type": "output_text", "text": " ".join(words), "annotations": []}]
    return {
        "type": "message",
        "id": "msg_test",
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def _responses_events(
    model: str,
    words: list[str],
    prompt: int,
    call: dict[str, str] | None,
    echo: dict[str, Any],
) -> Iterator[bytes]:
    seq = iter(range(10_000))
    pending = _response(model, words, prompt, status="in_progress", echo=echo)
    final = _response(model, words, prompt, call=call, echo=echo)
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": _output_item(words, call, "in_progress")},
        ),
    ]
    if call is not None:
        args = call["arguments"]
        at = {"item_id": "fc_test", "output_index": 0}
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            events.append(("response.function_call_arguments.delta", {**at, "delta": piece}))
        events.append(("response.function_call_arguments.done", {**at, "arguments": args}))
    else:
        part = {"type": "output_text", "text": "", "annotations": []}
        at = {"item_id": "msg_test", "output_index": 0, "content_index": 0}
        events.append(("response.content_part.added", {**at, "part": part}))
        for i, word in enumerate(words):
            if model == "mid-error" and i == 1:
                events.append(
                    (
                        "error",
                        {
                            "code": "server_error",
                            "message": "The server had an error while processing your request.",
                            "param": None,
                        },
                    )
                )
                break
            delta = word if i == 0 else " " + word
            events.append(("response.output_text.delta", {**at, "delta": delta, "logprobs": []}))
        else:
            text = " ".join(words)
            events += [
                ("response.output_text.done", {**at, "text": text, "logprobs": []}),
                ("response.content_part.done", {**at, "part": {**part, "text": text}}),
            ]
    if model != "mid-error":
        events += [
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
        if model == "garbled" or (model == "garbled-mid" and n == 5):
            event = b"data: {garbled\n\n" if model == "garbled" else _garbled(event)
        yield event


def _garbled(event: bytes) -> bytes:
    """The event under its own name (a Responses event's), its data not JSON."""
    name = event.split(b"\n", 1)[0] + b"\n" if event.startswith(b"event:") else b""
    return name + b"data: {garbled\n\n"


async def _cut(data: bytes) -> AsyncIterator[bytes]:
    yield data[: len(data) // 2]
    await asyncio.sleep(0.01)
    raise ConnectionResetError("the test upstream drops the connection on purpose")
