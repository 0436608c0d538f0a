"""Requests the published OpenAI spec (openai/openai-openapi: CreateChatCompletionRequest,
CreateCompletionRequest, CreateEmbeddingRequest) accepts are accepted and relayed;
those it refuses, among the fields the gateway reads, get a 400 naming the param.

Sent with the real `openai` client where it can send the case (it sends whatever
JSON it is given, 2.0 included); bodies it cannot send (a missing required field,
null where its types say a value) go as raw JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from forebay.gateway.metering import estimate_prompt_tokens, prompt_token_bound
from tests.conftest import Gateway, echo_config, start_gateway
from tests.support.openai_server import FakeUpstream
from tests.support.servers import ServerThread


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeUpstream, str]]:
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as server:
        yield upstream, f"{server.url}/v1"


@pytest.fixture(scope="module")
def gw(
    fake: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gateway = start_gateway(echo_config(fake[1]), workdir=tmp_path_factory.mktemp("spec"))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.tenant_key, max_retries=0) as c:
        yield c


CHAT = {"model": "echo", "messages": [{"role": "user", "content": "a b c"}]}
COMPLETION = {"model": "echo", "prompt": "a b c"}
EMBEDDING = {"model": "embed", "input": "a b c"}

# (what to send on top of the base body, what the upstream must then receive for it)
COMPLETIONS_ACCEPTED: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"prompt": ""}, {"prompt": ""}),
    ({"prompt": []}, {"prompt": []}),
    ({"prompt": ["a b", ""]}, {"prompt": ["a b", ""]}),
    ({"prompt": [1212, 318, 257]}, {"prompt": [1212, 318, 257]}),
    ({"prompt": [[1212, 318], [257]]}, {"prompt": [[1212, 318], [257]]}),
    ({"prompt": [1212.0, 318]}, {"prompt": [1212, 318]}),  # integers, as JSON Schema's
    ({"max_tokens": 0}, {"max_tokens": 0}),
    ({"max_tokens": 5.0}, {"max_tokens": 5}),
    ({"n": 2.0}, {"n": 2}),
    ({"best_of": 3.0, "n": 2}, {"best_of": 3, "n": 2}),
    ({"temperature": 2}, {"temperature": 2}),
    ({"temperature": 0.0}, {"temperature": 0.0}),
    ({"stream": None}, {"stream": None}),
]
CHAT_ACCEPTED: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"max_tokens": 0}, {"max_tokens": 0}),
    ({"max_tokens": 64.0}, {"max_tokens": 64}),
    ({"max_completion_tokens": 16.0}, {"max_completion_tokens": 16}),
    ({"n": 1.0}, {"n": 1}),
    ({"temperature": 1}, {"temperature": 1}),
    ({"stream": False}, {"stream": False}),
]
EMBEDDINGS_ACCEPTED: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"input": ""}, {"input": ""}),
    ({"input": ["a", ""]}, {"input": ["a", ""]}),
    ({"input": [1212, 318, 257]}, {"input": [1212, 318, 257]}),
    ({"input": [[1212, 318], [257]]}, {"input": [[1212, 318], [257]]}),
]


def _sent(fake: tuple[FakeUpstream, str]) -> dict[str, Any]:
    return fake[0].seen[-1].body


@pytest.mark.parametrize(("extra", "relayed"), COMPLETIONS_ACCEPTED)
def test_spec_valid_completions_are_relayed(
    client: openai.OpenAI,
    fake: tuple[FakeUpstream, str],
    extra: dict[str, Any],
    relayed: dict[str, Any],
) -> None:
    body = {**COMPLETION, **extra}
    reply = client.completions.create(**body)
    assert reply.object == "text_completion"
    sent = _sent(fake)
    for name, value in relayed.items():
        assert sent[name] == value and type(sent[name]) is type(value), name


@pytest.mark.parametrize(("extra", "relayed"), CHAT_ACCEPTED)
def test_spec_valid_chat_requests_are_relayed(
    client: openai.OpenAI,
    fake: tuple[FakeUpstream, str],
    extra: dict[str, Any],
    relayed: dict[str, Any],
) -> None:
    reply = client.chat.completions.create(**{**CHAT, **extra})
    assert reply.choices[0].message.role == "assistant"
    sent = _sent(fake)
    for name, value in relayed.items():
        assert sent[name] == value and type(sent[name]) is type(value), name


@pytest.mark.parametrize(("extra", "relayed"), EMBEDDINGS_ACCEPTED)
def test_spec_valid_embeddings_are_relayed_token_arrays_included(
    client: openai.OpenAI,
    fake: tuple[FakeUpstream, str],
    extra: dict[str, Any],
    relayed: dict[str, Any],
) -> None:
    reply = client.embeddings.create(**{**EMBEDDING, **extra})
    assert reply.data
    assert _sent(fake)["input"] == relayed["input"]


def test_stream_options_without_stream_is_accepted_and_not_passed_on(
    client: openai.OpenAI, fake: tuple[FakeUpstream, str]
) -> None:
    # Valid by the spec, refused by vLLM: it means nothing without `stream`.
    reply = client.chat.completions.create(**CHAT, stream_options={"include_usage": True})
    assert reply.choices[0].message.content == "a b c"
    assert "stream_options" not in _sent(fake)
    client.completions.create(**COMPLETION, stream=False, stream_options=None)
    assert "stream_options" not in _sent(fake)


def test_a_null_prompt_is_the_spec_default_and_relayed(
    gw: Gateway, fake: tuple[FakeUpstream, str]
) -> None:
    resp = _raw(gw, "completions", {"model": "echo", "prompt": None})
    assert resp.status_code == 200, resp.text
    assert _sent(fake)["prompt"] is None


def test_an_empty_model_name_is_not_found_not_malformed(gw: Gateway) -> None:
    err = _error(_raw(gw, "chat/completions", {**CHAT, "model": ""}), 404)
    assert err["param"] == "model"


def test_token_arrays_are_estimated_as_one_token_each() -> None:
    """The ledger's fallback estimate (for an upstream that reports no counts) and
    the limits' bound read token arrays as what they are."""
    payload = {"prompt": [[1, 2, 3], [4, 5]], "input": None}
    assert estimate_prompt_tokens(payload) == 5
    assert prompt_token_bound(payload) == 5 + 16  # and the template's tokens per request
    assert estimate_prompt_tokens({"input": [7, 8, 9, 10]}) == 4


# (what to send on top of the base body, the param the 400 must name)
COMPLETIONS_REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"prompt": 5}, "prompt"),
    ({"prompt": {"text": "a"}}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": ["a", 1]}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [[1], 2]}, "prompt"),
    ({"prompt": [[1, "x"]]}, "prompt"),
    ({"prompt": [True]}, "prompt"),  # true is no integer to JSON Schema
    ({"prompt": [1.5]}, "prompt"),
    ({"max_tokens": -1}, "max_tokens"),  # completions: minimum 0
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "16"}, "max_tokens"),
    ({"n": 0}, "n"),
    ({"n": 2.5}, "n"),
    ({"best_of": -1}, "best_of"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "1"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "stream_options": "include_usage"}, "stream_options"),
]
CHAT_REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"content": "hi"}]}, "messages[0]"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_completion_tokens": "8"}, "max_completion_tokens"),
    ({"n": 0}, "n"),
    ({"temperature": -0.1}, "temperature"),
    ({"stream_options": ["include_usage"]}, "stream_options"),
]
EMBEDDINGS_REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"input": []}, "input"),  # unlike a prompt, a list of inputs has minItems 1
    ({"input": [[]]}, "input"),
    ({"input": [1, [2]]}, "input"),
    ({"input": [[1], "a"]}, "input"),
    ({"input": {"text": "a"}}, "input"),
    ({"input": 7}, "input"),
]


def _bad_request(call: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(("extra", "param"), COMPLETIONS_REFUSED)
def test_spec_invalid_completions_are_400_naming_the_param(
    client: openai.OpenAI, fake: tuple[FakeUpstream, str], extra: dict[str, Any], param: str
) -> None:
    before = len(fake[0].seen)
    err = _bad_request(lambda: client.completions.create(**{**COMPLETION, **extra}))
    assert err.param == param and param in err.message
    assert len(fake[0].seen) == before  # never relayed


@pytest.mark.parametrize(("extra", "param"), CHAT_REFUSED)
def test_spec_invalid_chat_requests_are_400_naming_the_param(
    client: openai.OpenAI, fake: tuple[FakeUpstream, str], extra: dict[str, Any], param: str
) -> None:
    before = len(fake[0].seen)
    err = _bad_request(lambda: client.chat.completions.create(**{**CHAT, **extra}))
    assert err.param == param
    assert len(fake[0].seen) == before


@pytest.mark.parametrize(("extra", "param"), EMBEDDINGS_REFUSED)
def test_spec_invalid_embeddings_are_400_naming_the_param(
    client: openai.OpenAI, fake: tuple[FakeUpstream, str], extra: dict[str, Any], param: str
) -> None:
    before = len(fake[0].seen)
    err = _bad_request(lambda: client.embeddings.create(**{**EMBEDDING, **extra}))
    assert err.param == param
    assert len(fake[0].seen) == before


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("completions", {"model": "echo"}, "prompt"),  # required, though nullable
        ("embeddings", {"model": "embed"}, "input"),
        ("embeddings", {"model": "embed", "input": None}, "input"),  # not nullable
        ("chat/completions", {"messages": CHAT["messages"]}, "model"),
        ("chat/completions", {**CHAT, "model": 7}, "model"),
    ],
)
def test_missing_required_fields_are_400(
    gw: Gateway, path: str, body: dict[str, Any], param: str
) -> None:
    assert _error(_raw(gw, path, body), 400)["param"] == param


def _raw(gw: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.tenant_key}"}
    return httpx.post(f"{gw.base_url}/{path}", json=body, headers=headers, timeout=10)


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    return err


def test_a_whole_float_past_64_bits_is_refused_not_crashed(gw: Gateway) -> None:
    """1.8e19 is a whole number, but no upstream (nor orjson, re-encoding the body)
    can carry it: a 400 naming the field, not a 500."""
    for path, body in (
        ("chat/completions", CHAT),
        ("completions", {"model": "echo", "prompt": "a"}),
    ):
        resp = _raw(gw, path, {**body, "max_tokens": 1.8446744073709552e19})
        assert _error(resp, 400)["param"] == "max_tokens"
