"""The `signed` model of the OpenAI-compatible test server: a reasoning model
behind a Chat Completions endpoint that signs its turns, as Gemini 3 does
through its OpenAI-compatibility endpoint and LiteLLM does for Anthropic.

First turn (tools offered, no tool result yet): two parallel calls of the
first tool, the first carrying Google's
`tool_calls[].extra_content.google.thought_signature` (Gemini signs only the
first of parallel calls), and the readable reasoning as `reasoning_content`
with its signed form in LiteLLM's `thinking_blocks`.

Second turn (after the tool results): like Gemini 3, which rejects a function
call sent back without its signature with a 400, the server checks that the
assistant turn came back with both, verbatim, and answers "the tool said
<results>"; otherwise it refuses with Gemini's message.

`signed-garbled` answers the first turn with hostile values in those places (a
signature that is an object, a block signature over a MiB).
"""

from __future__ import annotations

from typing import Any

import orjson

CALL_SIGNATURE = "Q2lJQkRHOVNJR05oYkd3PQ=="
THINKING = "The user wants two cities; call the tool for each."
THINKING_SIGNATURE = "RXJVQmFudGhyb3BpYy1zaWc="
BLOCKS = [{"type": "thinking", "thinking": THINKING, "signature": THINKING_SIGNATURE}]
MISSING = "Function call is missing a thought_signature in functionCall parts."


GARBLED_CALL: Any = {"nested": ["not", "a", "string"]}
GARBLED_BLOCKS = [{"type": "thinking", "thinking": THINKING, "signature": "A" * (1 << 20 | 1)}]


def first_turn(body: dict[str, Any], text: str) -> dict[str, Any]:
    garbled = body["model"] == "signed-garbled"
    name = body["tools"][0]["function"]["name"]
    calls = []
    for n, city in enumerate((text, "London")):
        args = orjson.dumps({"city": city}).decode()
        call: dict[str, Any] = {"id": f"function-call-{n + 1}", "type": "function"}
        call["function"] = {"name": name, "arguments": args}
        if n == 0:
            sig = GARBLED_CALL if garbled else CALL_SIGNATURE
            call["extra_content"] = {"google": {"thought_signature": sig}}
        calls.append(call)
    return {
        "role": "assistant",
        "content": None,
        "reasoning_content": THINKING,
        "thinking_blocks": GARBLED_BLOCKS if garbled else BLOCKS,
        "tool_calls": calls,
    }


def signed_turn(body: dict[str, Any], text: str) -> tuple[dict[str, Any], str] | str:
    """The answer and its finish_reason, or the message of a 400."""
    messages = body.get("messages") or [{}]
    if messages[-1].get("role") != "tool":
        return first_turn(body, text), "tool_calls"
    asked = [m for m in messages if m.get("role") == "assistant" and m.get("tool_calls")]
    if not asked:
        return MISSING
    turn = asked[-1]
    first = turn["tool_calls"][0]
    if first.get("extra_content") != {"google": {"thought_signature": CALL_SIGNATURE}}:
        return f"{MISSING} Function call `{first['function']['name']}`, position 1."
    if any("extra_content" in c for c in turn["tool_calls"][1:]):
        return "Only the first of parallel function calls carries a thought_signature."
    if turn.get("thinking_blocks") != BLOCKS:
        return "The thinking blocks of the last assistant turn were modified."
    results = ", ".join(str(m.get("content")) for m in messages if m.get("role") == "tool")
    return {"role": "assistant", "content": f"the tool said {results}"}, "stop"
