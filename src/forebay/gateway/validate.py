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
    from forebay.protocols.canonical import Codec, GenRequest

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
    # The caller's headers that may reach an upstream (upstreams/passed_headers.py).
    headers: dict[str, str] | None = None
    protocol: WireProtocol = WireProtocol.OPENAI_CHAT  # the client's wire
    # The body in canonical form, decoded once: when it is parsed (protocols
    # other than Chat) or when a deployment first needs it translated.
    canonical: GenRequest | None = None
    # The codec that answers the client when the reply is translated, when it
    # is bound to this request (Responses: Forebay's ids, and the stored reply);
    # None: the protocol's own (protocols/registry.py).
    inbound: Codec | None = None
    # False: never relay the bytes untouched, even to an upstream of the client's
    # protocol (a Responses request whose state Forebay keeps).
    verbatim: bool = True
    # The body whose prompt limits, routing and estimates read, once built
    # (gateway/responses.prompt_body): the payload, or a continued Responses
    # conversation expanded.
    prompt_payload: dict[str, Any] | None = None


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
    if not isinstance(model, str):
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
    if "stream_options" in obj:
        opts = obj["stream_options"]
        if opts is not None and not isinstance(opts, dict):
            raise bad_request("'stream_options' must be an object or null.", param="stream_options")
        if not stream:
            # The spec allows it without `stream` (it then means nothing), but vLLM
            # and others refuse it there: it is not passed on.
            del obj["stream_options"]
        elif opts is not None:
            include_usage = opts.get("include_usage") is True
    return ParsedRequest(endpoint, obj, model, stream, include_usage)


# The checks below are the published OpenAI spec's rules (openai/openai-openapi,
# CreateChatCompletionRequest, CreateCompletionRequest, CreateEmbeddingRequest) for
# the fields the gateway itself reads, never stricter: an integer is JSON Schema's
# (2.0 is one; true is not), a nullable field may be null. Whole-number floats are
# rewritten as integers, since some upstreams (serde-based ones) refuse 2.0.


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
    # Chat's max_tokens and max_completion_tokens have no minimum in the spec.
    _integer(obj, "max_tokens")
    _integer(obj, "max_completion_tokens")
    _check_sampling(obj)


def _check_completions(obj: dict[str, Any]) -> None:
    if "prompt" not in obj:
        raise bad_request(
            "'prompt' is required: a string, a list of strings, a list of token ids "
            "or a list of lists of token ids.",
            param="prompt",
        )
    prompt = obj["prompt"]
    if prompt is not None and not isinstance(prompt, str):  # nullable: null means <|endoftext|>
        _check_texts_or_tokens(obj, "prompt", empty_list_ok=True)
    _integer(obj, "max_tokens", minimum=0)
    _integer(obj, "max_completion_tokens")  # not a completions field; limits read it
    _integer(obj, "best_of", minimum=0)
    _check_sampling(obj)


def _check_embeddings(obj: dict[str, Any]) -> None:
    if not isinstance(obj.get("input"), str):  # any string, "" included
        _check_texts_or_tokens(obj, "input", empty_list_ok=False)


def _check_texts_or_tokens(obj: dict[str, Any], name: str, *, empty_list_ok: bool) -> None:
    """One of the spec's four forms: a string (checked by the caller), a list of
    strings, a list of token ids (integers), or a list of non-empty lists of token
    ids. Only a list of strings may be empty, and only where `empty_list_ok`."""
    value = obj.get(name)
    forms = (
        f"'{name}' must be a string, a list of strings, a list of token ids (integers) "
        "or a list of non-empty lists of token ids"
    )
    if not isinstance(value, list):
        raise bad_request(f"{forms}.", param=name)
    if not value:
        if empty_list_ok:
            return
        raise bad_request(f"{forms}; this list is empty.", param=name)
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise bad_request(
                    f"{forms}: {name}[{i}] is not a string like the first.", param=name
                )
    elif isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list) or not item:
                raise bad_request(f"{forms}: {name}[{i}] is not a non-empty list.", param=name)
            _token_ids(item, f"{name}[{i}]", name, forms)
    else:
        _token_ids(value, name, name, forms)


def _token_ids(tokens: list[Any], where: str, param: str, forms: str) -> None:
    for i, token in enumerate(tokens):
        if type(token) is int:  # the common case: no further look
            continue
        whole = _whole_number(token)
        if whole is None:
            raise bad_request(f"{forms}: {where}[{i}] is not a token id (an integer).", param=param)
        tokens[i] = whole


def _whole_number(value: Any) -> int | None:
    """`value` as an int if JSON Schema calls it an integer (7, 7.0; not true),
    and no upstream's JSON (nor orjson, re-encoding it) refuses it: 64 bits."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and -(2**63) <= value < 2**63:
        return value
    return None


def _integer(obj: dict[str, Any], name: str, *, minimum: int | None = None) -> None:
    """A nullable integer field, at least `minimum` where the spec sets one."""
    value = obj.get(name)
    if value is None:
        return
    n = _whole_number(value)
    if n is None or (minimum is not None and n < minimum):
        at_least = "" if minimum is None else f" of at least {minimum}"
        raise bad_request(f"'{name}' must be an integer{at_least}.", param=name)
    if type(value) is not int:
        obj[name] = n


def _check_sampling(obj: dict[str, Any]) -> None:
    _integer(obj, "n", minimum=1)
    temperature = obj.get("temperature")
    if temperature is not None and (
        type(temperature) not in (int, float) or not 0 <= temperature <= 2
    ):
        raise bad_request("'temperature' must be a number between 0 and 2.", param="temperature")


def max_output_tokens(payload: dict[str, Any]) -> int | None:
    """The most output tokens per choice the caller allows, or None when nothing
    bounds them: no cap set, or a negative one (llama.cpp reads -1 as no limit).
    With both caps set, the larger: servers differ in which one they read."""
    found: int | None = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if type(value) is not int or value < 0:  # validated: an int, or a refused request
            return None
        found = value if found is None else max(found, value)
    return found


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
