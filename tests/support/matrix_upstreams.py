"""The upstream side of the protocol matrix (tests/gateway/test_protocol_matrix.py):
one `Kind` per upstream a deployment may name, with the test server and models
of each case, and what the ledger must hold for it, worked out by hand from the
usage fields that server reports (as its provider documents them) and PRICE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forebay.upstreams.base import WireProtocol
from tests.support import (
    anthropic_server,
    azure_openai_server,
    bedrock_server,
    gemini_server,
    openai_api_server,
)
from tests.support.matrix_inbound import TOOL_QUESTION, TOOL_RESULT

# Every deployment's prices, per million tokens.
IN, CACHE_READ, CACHE_WRITE, OUT = 2.0, 0.5, 4.0, 8.0
PRICE = (
    f"{{input_per_million: {IN}, cache_read_per_million: {CACHE_READ}, "
    f"cache_write_per_million: {CACHE_WRITE}, output_per_million: {OUT}}}"
)
USER_TEXT = "a b c"  # three words; every test server counts a word as a token


@dataclass(frozen=True)
class Hand:
    """A ledger row's counts and cost, as worked out by hand from what the
    upstream reports and PRICE."""

    prompt: int  # all input tokens, cached ones included
    completion: int  # reasoning included
    cache_read: int
    cache_write: int
    reasoning: int
    cost: float


# What each provider's test server reports for USER_TEXT under a three-word
# system text, and what that costs:
# * OpenAI's wire (openai_compat, openai Chat and Responses, Azure), model
#   details-20-5: 3 words + 3 of chat template + 20 read from the cache as
#   prompt_tokens 26 (cached_tokens 20 inside it); 3 words + 5 reasoning as
#   completion_tokens 8. Cost: 6 x $2 + 20 x $0.50 + 8 x $8.
OPENAI_WIRE = Hand(26, 8, 20, 0, 5, (6 * 2.0 + 20 * 0.5 + 8 * 8.0) / 1e6)
# * Gemini: promptTokenCount 53 = 3 words + cachedContentTokenCount 50 (inside
#   it, as Google counts), candidatesTokenCount 3. Cost: 3 x $2 + 50 x $0.50 + 3 x $8.
GEMINI = Hand(53, 3, 50, 0, 0, (3 * 2.0 + 50 * 0.5 + 3 * 8.0) / 1e6)
# * Bedrock: inputTokens 3 with cacheReadInputTokens 100 and cacheWriteInputTokens
#   20 beside it (outside, as AWS counts), outputTokens 3.
#   Cost: 3 x $2 + 100 x $0.50 + 20 x $4 + 3 x $8.
BEDROCK = Hand(123, 3, 100, 20, 0, (3 * 2.0 + 100 * 0.5 + 20 * 4.0 + 3 * 8.0) / 1e6)
# * Anthropic: a Messages client marks its system block with cache_control, so
#   the first request writes those 3 words to the cache (cache_creation_input_tokens
#   3, input_tokens 3 for the user's words) and the second reads them
#   (cache_read_input_tokens 3); both outside input_tokens. A Chat client cannot
#   mark a prefix: input_tokens 6, nothing cached. output_tokens 3.
ANTHROPIC_WRITE = Hand(6, 3, 0, 3, 0, (3 * 2.0 + 3 * 4.0 + 3 * 8.0) / 1e6)
ANTHROPIC_READ = Hand(6, 3, 3, 0, 0, (3 * 2.0 + 3 * 0.5 + 3 * 8.0) / 1e6)
ANTHROPIC_UNMARKED = Hand(6, 3, 0, 0, 0, (6 * 2.0 + 3 * 8.0) / 1e6)


# The first turn of a tool round trip ("weather in Lima", one tool), by hand:
# * openai_compat's `tools`: prompt_tokens 13 (3 words + 10) with cached_tokens 2,
#   completion_tokens 5 with reasoning_tokens 1.
COMPAT_TOOL = Hand(13, 5, 2, 0, 1, (11 * 2.0 + 2 * 0.5 + 5 * 8.0) / 1e6)
# * OpenAI's and Azure's `tools`: 3 words + 3, 5 out, nothing cached.
OPENAI_TOOL = Hand(6, 5, 0, 0, 0, (6 * 2.0 + 5 * 8.0) / 1e6)
# * Anthropic: input_tokens 3 (the tool definition has no words), output_tokens 3
#   (the tool_use input's JSON split on spaces).
ANTHROPIC_TOOL = Hand(3, 3, 0, 0, 0, (3 * 2.0 + 3 * 8.0) / 1e6)
# * Gemini: promptTokenCount 53 (50 cached), candidatesTokenCount 9.
GEMINI_TOOL = Hand(53, 9, 50, 0, 0, (3 * 2.0 + 50 * 0.5 + 9 * 8.0) / 1e6)
# * Bedrock: inputTokens 3, cache read 100 and write 20 beside it, outputTokens 12.
BEDROCK_TOOL = Hand(123, 12, 100, 20, 0, (3 * 2.0 + 100 * 0.5 + 20 * 4.0 + 12 * 8.0) / 1e6)


def _anthropic_hand(inbound: str, nth: int) -> Hand:
    if inbound != "anthropic_messages":
        return ANTHROPIC_UNMARKED
    return ANTHROPIC_WRITE if nth == 0 else ANTHROPIC_READ


@dataclass(frozen=True)
class Kind:
    name: str
    server: str  # which test server (a key of the `servers` fixture)
    # (server url, upstream model) -> the deployment's YAML flow mapping, less name and price
    deployment: Callable[[str, str], str]
    text: str  # the upstream models of the text, tool and broken-stream cases
    tools: str
    broken: str
    usage: Callable[[str, int], Hand]  # (inbound protocol, nth same request) -> by hand
    tool_args: dict[str, Any]
    tool_answer: str
    tool_usage: Hand
    broken_message: str  # what the broken model's stream error says
    wire: WireProtocol | None = None  # speak only this one of the deployment's protocols


def _openai(url: str, model: str) -> str:
    key = openai_api_server.API_KEY
    return f"provider: openai, base_url: '{url}/v1', model: {model}, api_key: '{key}'"


def _azure(url: str, model: str) -> str:
    key = azure_openai_server.API_KEY
    return (
        f"provider: azure_openai, base_url: '{url}', model: {model}, "
        f"azure_deployment: {model}, api_key: '{key}'"
    )


def _anthropic(url: str, model: str) -> str:
    key = anthropic_server.API_KEY
    return f"provider: anthropic, base_url: '{url}', model: {model}, api_key: '{key}'"


def _gemini(url: str, model: str) -> str:
    return (
        f"provider: gemini, base_url: '{url}', model: {model}, api_key: '{gemini_server.API_KEY}'"
    )


def _bedrock(url: str, model: str) -> str:
    return (
        f"provider: bedrock, base_url: '{url}', model: {model}, aws: {{region: "
        f"{bedrock_server.REGION}, access_key_id: {bedrock_server.ACCESS_KEY}, "
        f"secret_access_key: '{bedrock_server.SECRET_KEY}'}}"
    )


OPENAI_FAILURE = "The server had an error while processing your request."
CITY = {"city": TOOL_QUESTION}
SAID = f"the tool said {TOOL_RESULT}"
# The four upstreams of OpenAI's wire answer the same models the same way.
_OPENAI_FAMILY: dict[str, Any] = dict(
    text="details-20-5",
    tools="tools",
    broken="mid-error",
    usage=lambda _, __: OPENAI_WIRE,
    tool_args=CITY,
    tool_answer=SAID,
)
KINDS = (
    Kind(
        name="openai_compat",
        server="compat",
        deployment=lambda url, model: f"base_url: '{url}/v1', model: {model}",
        tool_usage=COMPAT_TOOL,
        broken_message="the engine died mid-generation",
        **_OPENAI_FAMILY,
    ),
    *(
        Kind(
            name=name,
            server=server,
            deployment=deployment,
            tool_usage=OPENAI_TOOL,
            broken_message=OPENAI_FAILURE,
            wire=wire,
            **_OPENAI_FAMILY,
        )
        for name, server, deployment, wire in (
            ("openai_chat", "openai", _openai, WireProtocol.OPENAI_CHAT),
            ("openai_responses", "openai", _openai, WireProtocol.OPENAI_RESPONSES),
            ("azure_openai", "azure", _azure, None),
        )
    ),
    Kind(
        name="anthropic",
        server="anthropic",
        deployment=_anthropic,
        text="claude-sonnet-4-5",
        tools="claude-sonnet-4-5",
        broken="stream-error",
        usage=_anthropic_hand,
        tool_args={"query": TOOL_QUESTION},
        tool_answer=TOOL_RESULT,  # the test server echoes the tool result
        tool_usage=ANTHROPIC_TOOL,
        broken_message="Overloaded",
    ),
    Kind(
        name="gemini",
        server="gemini",
        deployment=_gemini,
        text="gemini-echo",
        tools="gemini-tool",
        broken="gemini-midstream",
        usage=lambda _, __: GEMINI,
        tool_args={"city": "Paris"},
        tool_answer=SAID,
        tool_usage=GEMINI_TOOL,
        broken_message="The model is overloaded.",
    ),
    Kind(
        name="bedrock",
        server="bedrock",
        deployment=_bedrock,
        text="echo",
        tools="tool",
        broken="stream-throttle",
        usage=lambda _, __: BEDROCK,
        tool_args={"city": "Paris"},
        tool_answer=SAID,
        tool_usage=BEDROCK_TOOL,
        broken_message="Too many tokens, please wait before trying again.",
    ),
)
