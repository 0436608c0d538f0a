"""What an upstream protocol cannot do with a canonical option, and what a
translated request then gets. One policy for every upstream:

* An option that changes the answer's form (`json_object` / `json_schema`
  output) and the upstream has no equivalent for: a 400 naming the caller's
  parameter, since an answer in prose where JSON was asked breaks the caller.
* An option that only tunes sampling or effort (`seed`, the penalties, a
  reasoning effort the model has no control for): dropped, and named in the
  response's `x-forebay-dropped-params`, since the answer keeps its form.

Reasoning effort (OpenAI `reasoning_effort` / Responses `reasoning.effort`) is
mapped where the provider documents a control: Gemini 3 `thinkingLevel`,
Gemini 2.5 `thinkingBudget`, and Anthropic models' `thinking.budget_tokens`
(directly or through Bedrock's `additionalModelRequestFields`).
"""

from __future__ import annotations

from forebay.protocols.canonical import GenRequest

DROPPED_HEADER = "x-forebay-dropped-params"
MIN_THINKING_BUDGET = 1024  # Anthropic's least budget_tokens
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; Chat and Responses do not
# Effort -> thinking tokens (the budgets Google's OpenAI-compatible endpoint uses).
EFFORT_BUDGET = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
NO_EFFORT = "none"
_SAMPLING = ("seed", "presence_penalty", "frequency_penalty")
# The caller's name of a canonical option, by the caller's protocol.
_PARAM = {
    "openai_chat": {"output": "response_format", "reasoning": "reasoning_effort"},
    "openai_responses": {"output": "text.format", "reasoning": "reasoning.effort"},
    "anthropic_messages": {"reasoning": "thinking"},
}


def thinking_budget(effort: str, max_tokens: int | None) -> int | None:
    """Anthropic's budget_tokens for an effort: under max_tokens, as Anthropic
    requires, and None when no budget fits (or the effort is not OpenAI's)."""
    budget = EFFORT_BUDGET.get(effort)
    if budget is None:
        return None
    if max_tokens is not None and budget >= max_tokens:
        budget = max_tokens - 1
    return budget if budget >= MIN_THINKING_BUDGET else None


def anthropic_max_tokens(req: GenRequest) -> int:
    """The max_tokens a Messages upstream is sent (it requires one)."""
    return req.max_output_tokens or DEFAULT_MAX_TOKENS


def is_claude(model: str) -> bool:
    """A Bedrock model id, inference profile or ARN of an Anthropic model."""
    return "anthropic.claude" in model


def unmet(req: GenRequest, upstream: str, model: str) -> tuple[list[str], list[str]]:
    """(refused, dropped) canonical option names of `req` for an `upstream`
    protocol serving `model`."""
    refused: list[str] = []
    dropped: list[str] = []
    if upstream in ("bedrock_converse", "anthropic_messages"):
        dropped += [name for name in _SAMPLING if getattr(req, name) is not None]
        kind = req.output.kind if req.output is not None else "text"
        # Converse has json_schema (outputConfig) but no bare JSON mode; the
        # Messages encoder maps neither.
        json_forms = ("json_object", "json_schema") if upstream == "anthropic_messages" else ()
        if kind == "json_object" or kind in json_forms:
            refused.append("output")
    r = req.reasoning
    if r is not None and r.budget_tokens is None and r.effort and r.effort != NO_EFFORT:
        if upstream == "gemini":
            known = r.effort in EFFORT_BUDGET
        elif upstream == "anthropic_messages" or is_claude(model):
            max_tokens = req.max_output_tokens
            if upstream == "anthropic_messages":
                max_tokens = anthropic_max_tokens(req)
            known = thinking_budget(r.effort, max_tokens) is not None
        else:
            known = upstream != "bedrock_converse"
        if not known:
            dropped.append("reasoning")
    return refused, dropped


def param(inbound: str, name: str) -> str:
    """The caller's parameter for a canonical option name."""
    return _PARAM.get(inbound, {}).get(name, name)
