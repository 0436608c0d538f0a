"""Stage 2: check the body once, cheaply, with messages that say what to fix.

Only what the gateway itself relies on is checked here; anything else is the
upstream's to judge, and its error is passed back as-is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from forebay.errors import ForebayError, bad_request, too_large
from forebay.upstreams.base import Endpoint, WireProtocol

if TYPE_CHECKING:
    from forebay.protocols.canonical import GenRequest

# Body fields that would let a caller steer where a request goes or what
# credentials it uses. They are dropped, never honoured.
ROUTING_OVERRIDES = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_type",
        "api_version",
        "organization",
        "custom_llm_provider",
        "extra_headers",
        "litellm_params",
        "deployment_id",
        "host",
    }
)


# orjson reads 1,024 levels of nesting but writes only 254, so a deeper body
# would be accepted here and then fail when it is encoded for the upstream.
# Real requests nest far less (a tool's JSON schema rarely passes 20 levels);
# the margin leaves room for a translator to wrap the payload.
MAX_JSON_DEPTH = 128


@dataclass(slots=True)
class ParsedRequest:
    endpoint: Endpoint
    payload: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    protocol: WireProtocol = WireProtocol.OPENAI_CHAT  # the client's wire
    # The body in canonical form, decoded once: when it is parsed (protocols
    # other than Chat) or when a deployment first needs it translated.
    canonical: GenRequest | None = None


def parse_json(body: bytes, limit: int) -> dict[str, Any]:
    if len(body) > limit:
        raise too_large(limit)
    if not body:
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON ({exc.args[0]}).") from None
    if not isinstance(obj, dict):
        raise bad_request("The request body must be a JSON object.")
    # Each level needs its own bracket, so a body with few brackets (every
    # typical chat body) is not walked at all: two C-level counts.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _nested_deeper(obj, MAX_JSON_DEPTH):
        raise bad_request(
            f"The request body nests objects or arrays more than {MAX_JSON_DEPTH} levels "
            "deep; flatten it.",
            code="too_deeply_nested",
        )
    return obj


def _nested_deeper(value: Any, limit: int, depth: int = 1) -> bool:
    """Whether `value` (a dict or a list at `depth`) holds containers deeper than `limit`."""
    for child in value.values() if type(value) is dict else value:
        kind = type(child)  # `type is`, not isinstance: several times faster here
        if (kind is dict or kind is list) and (
            depth >= limit or _nested_deeper(child, limit, depth + 1)
        ):
            return True
    return False


def parse_request(endpoint: Endpoint, obj: dict[str, Any]) -> ParsedRequest:
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(
            "'model' is required and must be a string, e.g. \"local\".", param="model"
        )
    for field in ROUTING_OVERRIDES.intersection(obj):
        del obj[field]
    stream = obj.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false.", param="stream")
    if endpoint is Endpoint.EMBEDDINGS:
        _check_embeddings(obj)
        if stream:
            raise bad_request("Embeddings cannot be streamed; remove 'stream'.", param="stream")
    elif endpoint is Endpoint.CHAT:
        _check_chat(obj)
    else:
        _check_completions(obj)
    include_usage = False
    opts = obj.get("stream_options")
    if opts is not None:
        if not stream:
            raise bad_request(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
            )
        if not isinstance(opts, dict):
            raise bad_request("'stream_options' must be an object.", param="stream_options")
        include_usage = opts.get("include_usage") is True
    return ParsedRequest(endpoint, obj, model, stream, include_usage)


def _check_chat(obj: dict[str, Any]) -> None:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "'messages' is required: a non-empty list like "
            '[{"role": "user", "content": "Hello"}].',
            param="messages",
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise bad_request(
                f"messages[{i}] must be an object with a string 'role'.", param=f"messages[{i}]"
            )
    _check_sampling(obj)


def _check_completions(obj: dict[str, Any]) -> None:
    prompt = obj.get("prompt")
    if prompt is None or (isinstance(prompt, (str, list)) and len(prompt) == 0):
        raise bad_request("'prompt' is required: a string or a list of strings.", param="prompt")
    if not isinstance(prompt, (str, list)):
        raise bad_request("'prompt' must be a string or a list of strings.", param="prompt")
    _check_sampling(obj)


def _check_embeddings(obj: dict[str, Any]) -> None:
    data = obj.get("input")
    if data is None or (isinstance(data, (str, list)) and len(data) == 0):
        raise bad_request(
            "'input' is required: a string or a non-empty list of strings.", param="input"
        )
    if not isinstance(data, (str, list)):
        raise bad_request("'input' must be a string or a list of strings.", param="input")


def _check_sampling(obj: dict[str, Any]) -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        value = obj.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise bad_request(f"'{name}' must be a positive integer.", param=name)
    n = obj.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise bad_request("'n' must be a positive integer.", param="n")
    temperature = obj.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 2
    ):
        raise bad_request("'temperature' must be a number between 0 and 2.", param="temperature")


def max_output_tokens(payload: dict[str, Any]) -> int | None:
    value = payload.get("max_completion_tokens") or payload.get("max_tokens")
    return value if isinstance(value, int) else None


def kind_mismatch(endpoint: Endpoint, alias: str, kind: str) -> ForebayError | None:
    if endpoint is Endpoint.EMBEDDINGS and kind != "embedding":
        return bad_request(
            f"Model '{alias}' is a {kind} model; /v1/embeddings needs an embedding model.",
            param="model",
            code="wrong_model_kind",
        )
    if endpoint is not Endpoint.EMBEDDINGS and kind == "embedding":
        return bad_request(
            f"Model '{alias}' is an embedding model; send it to /v1/embeddings.",
            param="model",
            code="wrong_model_kind",
        )
    return None
