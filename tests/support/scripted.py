"""A scripted model turn for the loopback servers' `scripted` model: what a real
model does when an agent (Claude Code, an AI SDK tool loop) hands it a tool.

A script names one tool and the arguments to call it with. While the request
offers that tool and holds no result for the call, the answer is that call;
once the request carries the result, the answer is text: `reply` followed by
the result's text, so whatever the client shows proves the round trip (the
client ran the tool and sent its output back). A request that does not offer
the tool (an agent's side request, or a client that dropped the tool) gets the
text `NO_TOOL` and the tool's name, which a test's assertions then catch.

The functions here are pure, over wire dicts: `anthropic_turn` for a Messages
body, `chat_turn` for a Chat Completions body, `responses_turn` for a Responses
body (function tools, top level or inside a `namespace`); the servers frame the answer
(whole or streamed) and count its usage as they do any other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

NO_TOOL = "the request offered no tool named"


@dataclass(frozen=True)
class ToolScript:
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    reply: str = "The tool returned:"

    def answer(self, result: str) -> str:
        return f"{self.reply} {result.strip()}"

    def missing(self) -> str:
        return f"{NO_TOOL} {self.tool}"

    def call_id(self, prefix: str) -> str:
        digest = hashlib.sha256(orjson.dumps(self.arguments, option=orjson.OPT_SORT_KEYS))
        return prefix + digest.hexdigest()[:24]


def anthropic_turn(script: ToolScript, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and stop_reason of the scripted Messages answer."""
    offered = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
    call_id = script.call_id("toolu_01")
    result = _anthropic_result(body, call_id)
    if result is not None:
        return [{"type": "text", "text": script.answer(result)}], "end_turn"
    if script.tool not in offered:
        return [{"type": "text", "text": script.missing()}], "end_turn"
    call = {"type": "tool_use", "id": call_id, "name": script.tool, "input": script.arguments}
    return [call], "tool_use"


def chat_turn(script: ToolScript, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The assistant message and finish_reason of the scripted Chat answer."""
    offered = {
        (t.get("function") or {}).get("name")
        for t in body.get("tools") or []
        if isinstance(t, dict)
    }
    call_id = script.call_id("call_")
    for msg in body.get("messages") or []:
        answered = isinstance(msg, dict) and msg.get("tool_call_id") == call_id
        if answered and msg.get("role") == "tool":
            text = script.answer(_text_of(msg.get("content")))
            return {"role": "assistant", "content": text}, "stop"
    if script.tool not in offered:
        return {"role": "assistant", "content": script.missing()}, "stop"
    args = orjson.dumps(script.arguments).decode()
    function = {"name": script.tool, "arguments": args}
    call = {"id": call_id, "type": "function", "function": function}
    return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"


def responses_turn(script: ToolScript, body: dict[str, Any]) -> tuple[str, dict[str, str] | None]:
    """The scripted Responses answer: (text, None), or ("", the function_call
    item's {"call_id", "name", "arguments"})."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    nested = [n for t in tools if t.get("type") == "namespace" for n in t.get("tools") or []]
    offered = {t.get("name") for t in [*tools, *nested] if t.get("type") == "function"}
    call_id = script.call_id("call_")
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        output = isinstance(item, dict) and item.get("type") == "function_call_output"
        if output and item.get("call_id") == call_id:
            return script.answer(_text_of(item.get("output"))), None
    if script.tool not in offered:
        return script.missing(), None
    args = orjson.dumps(script.arguments).decode()
    return "", {"call_id": call_id, "name": script.tool, "arguments": args}


def _anthropic_result(body: dict[str, Any], call_id: str) -> str | None:
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        for part in content if isinstance(content, list) else []:
            if (
                isinstance(part, dict)
                and part.get("type") == "tool_result"
                and part.get("tool_use_id") == call_id
            ):
                return _text_of(part.get("content"))
    return None


def _text_of(content: Any) -> str:
    """A tool result's text: a string, or the text of its content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
