"""The Responses API column of the protocol matrix (matrix_inbound.INBOUND):
how a client of POST /v1/responses asks, and how it reads what it got.

Both ways Forebay serves a Responses body are exercised: a streamed text
answer (and so the mid-stream failure), a whole tool call and the SDK's
streamed round trip send `store: false` (so an upstream speaking Responses
natively gets the bytes relayed, ids and all); the others leave `store` at its
default (true: Forebay keeps the Response under its own id and translates,
whatever the upstream speaks).

The stream readers check what the reference promises of every stream, not
just the text they return: each event named after its `type`,
`sequence_number` from 0 up by one, every item event's `output_index` and
`item_id` those of an item announced by response.output_item.added, and the
final Response's output the items announced done."""

from __future__ import annotations

from typing import Any

import openai
import orjson

from tests.support.matrix_inbound import (
    TOOL_NAME,
    TOOL_QUESTION,
    TOOL_RESULT,
    TOOL_SCHEMA,
    Inbound,
    frames,
)

TOOLS: list[Any] = [{"type": "function", "name": TOOL_NAME, "parameters": TOOL_SCHEMA}]
_ENDS = ("response.completed", "response.incomplete", "response.failed")


def _ask(alias: str, system: str, text: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": alias, "instructions": system, "input": text}
    # Whole: the default (stored, translated); streamed: stateless (relayed if it can be).
    return {**body, "stream": True, "store": False} if stream else body


def _ask_tool(alias: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": alias, "input": TOOL_QUESTION, "tools": TOOLS}
    # The other way round from _ask, so each case is seen both ways across the matrix.
    return {**body, "stream": True} if stream else {**body, "store": False}


def _text(reply: dict[str, Any]) -> str:
    assert reply["object"] == "response" and reply["status"] == "completed", reply
    messages = [i for i in reply["output"] if i["type"] == "message"]
    assert messages and all(m["role"] == "assistant" for m in messages), reply
    return "".join(c["text"] for m in messages for c in m["content"] if c["type"] == "output_text")


def _tool_call(reply: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    assert reply["status"] == "completed", reply
    (call,) = [i for i in reply["output"] if i["type"] == "function_call"]
    assert call["status"] == "completed" and call["call_id"], call
    return call["name"], orjson.loads(call["arguments"])


def _events(raw: bytes) -> list[dict[str, Any]]:
    """The stream's events, checked for what holds of every Responses stream."""
    out: list[dict[str, Any]] = []
    items: dict[int, str | None] = {}  # output_index -> item id, as announced
    done: dict[int, dict[str, Any]] = {}
    for n, (name, data) in enumerate(frames(raw)):
        assert name == data["type"], (name, data)
        assert data["sequence_number"] == n, (n, data)
        if name == "response.output_item.added":
            assert data["output_index"] == len(items), data
            items[data["output_index"]] = data["item"].get("id")
        elif name == "response.output_item.done":
            done[data["output_index"]] = data["item"]
        if "item_id" in data or name.startswith("response.output_item."):
            at = data["output_index"]
            assert at in items, data  # announced before any event of its own
            assert at not in done or name == "response.output_item.done", data  # none after
            if "item_id" in data:
                assert data["item_id"] == items[at], (items, data)
        out.append(data)
    last = out[-1]
    if last["type"] in _ENDS:
        final = last["response"]
        assert final["object"] == "response", final
        if last["type"] == "response.failed":  # items cut short need no done event
            assert [i.get("id") for i in final["output"]] == list(items.values()), (final, items)
        else:
            assert final["usage"] is not None, final
            assert final["output"] == [done[i] for i in sorted(done)], (final, done)
        assert all(e.get("response", final)["id"] == final["id"] for e in out), out
    return out


def _stream_text(raw: bytes) -> str:
    got = _events(raw)
    assert got[-1]["type"] == "response.completed", got[-1]
    return "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")


def _stream_tool_call(raw: bytes) -> tuple[str, dict[str, Any]]:
    got = _events(raw)
    assert got[-1]["type"] == "response.completed", got[-1]
    (added,) = [
        e["item"]
        for e in got
        if e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call"
    ]
    args = "".join(
        e["delta"]
        for e in got
        if e["type"] == "response.function_call_arguments.delta" and e["item_id"] == added["id"]
    )
    (whole,) = [e for e in got if e["type"] == "response.function_call_arguments.done"]
    assert whole["arguments"] == args, (whole, args)
    return added["name"], orjson.loads(args)


def _stream_error(raw: bytes) -> dict[str, Any]:
    got = _events(raw)
    last = got[-1]
    if last["type"] == "error":
        return {"type": last["code"], "message": last["message"]}
    assert last["type"] == "response.failed", last
    error = last["response"]["error"]
    assert last["response"]["status"] == "failed", last
    return {"type": error["code"], "message": error["message"]}


def _sdk(url: str, key: str, alias: str, stream: bool) -> tuple[str, dict[str, Any], str]:
    """Whole: stored, the follow-up names previous_response_id; streamed: with
    store false, the follow-up carries the first turn's output items itself."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        first: openai.types.responses.Response
        if stream:
            with client.responses.stream(
                model=alias, input=TOOL_QUESTION, tools=TOOLS, store=False
            ) as events:
                first = events.get_final_response()
        else:
            first = client.responses.create(model=alias, input=TOOL_QUESTION, tools=TOOLS)
        assert first.status == "completed", first
        (call,) = [i for i in first.output if i.type == "function_call"]
        result: Any = {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": TOOL_RESULT,
        }
        if stream:
            said: list[Any] = [i.model_dump(exclude_none=True) for i in first.output]
            second = client.responses.create(
                model=alias,
                tools=TOOLS,
                store=False,
                input=[{"role": "user", "content": TOOL_QUESTION}, *said, result],
            )
        else:
            second = client.responses.create(
                model=alias, tools=TOOLS, previous_response_id=first.id, input=[result]
            )
        assert second.status == "completed", second
        return call.name, orjson.loads(call.arguments), second.output_text


def _sdk_error(url: str, key: str, alias: str) -> str:
    """A Responses stream says it failed in its events (`error`, then
    response.failed), which the SDK hands over rather than raising."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        said = ""
        for event in client.responses.create(model=alias, input="a b c", stream=True):
            if event.type == "error":
                said = event.message
            elif event.type == "response.failed":
                assert event.response.error is not None, event
                return event.response.error.message
        if said:
            return said
        raise AssertionError("the stream ended without an error")


RESPONSES = Inbound(
    name="openai_responses",
    path="/v1/responses",
    auth=lambda key: {"authorization": f"Bearer {key}"},
    ask=_ask,
    ask_tool=_ask_tool,
    text_of=_text,
    tool_call_of=_tool_call,
    stream_text=_stream_text,
    stream_tool_call=_stream_tool_call,
    stream_error=_stream_error,
    sdk_round_trip=_sdk,
    sdk_stream_error=_sdk_error,
)
