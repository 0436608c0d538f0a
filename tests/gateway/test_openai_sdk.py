"""The unmodified openai SDK against the gateway in front of the test upstream."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.conftest import GatewayFactory, Upstream, echo_config


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream):  # type: ignore[no-untyped-def]
    return make_gateway(echo_config(upstream.base_url))


def test_chat_non_stream_returns_upstream_answer_and_route(
    sdk: Callable[..., openai.OpenAI], gw, upstream
) -> None:  # type: ignore[no-untyped-def]
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hello big world"}]
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "hello big world"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert raw.headers["x-forebay-route"] == "ordered: fake-echo"
    assert raw.headers["x-request-id"].startswith("req_")
    sent = upstream.fake.seen[-1]
    assert sent.body["model"] == "echo"
    # The gateway authenticates upstream with the deployment's key, never the caller's.
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret-DO-NOT-LEAK"


def test_chat_stream_with_usage(sdk: Callable[..., openai.OpenAI], gw) -> None:  # type: ignore[no-untyped-def]
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    stream = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_chat_stream_without_usage_hides_the_usage_chunk(
    sdk: Callable[..., openai.OpenAI], gw, upstream
) -> None:  # type: ignore[no-untyped-def]
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    chunks = list(
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "a b"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # ...yet the gateway asked the upstream for usage, to meter the request.
    assert upstream.fake.seen[-1].body["stream_options"] == {"include_usage": True}


def test_completions_and_embeddings(sdk: Callable[..., openai.OpenAI], gw) -> None:  # type: ignore[no-untyped-def]
    client = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    comp = client.completions.create(model="echo", prompt="say this", max_tokens=1)
    assert comp.choices[0].text == "say"
    emb = client.embeddings.create(model="embed", input=["abc", "de"])
    assert [d.embedding[0] for d in emb.data] == [3.0, 2.0]
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="echo", prompt="x y", stream=True)
    )
    assert streamed == "x y"


def test_models_lists_only_what_the_key_may_use(sdk: Callable[..., openai.OpenAI], gw) -> None:  # type: ignore[no-untyped-def]
    unscoped = sdk(base_url=gw.base_url, api_key=gw.tenant_key)
    assert sorted(m.id for m in unscoped.models.list()) == ["echo", "embed", "nousage"]
    store = gw.services.store
    scoped = store.create_key("default", models=["embed"]).key
    gw.services.keyring.replace(store.active_principals())
    client = sdk(base_url=gw.base_url, api_key=scoped)
    assert [m.id for m in client.models.list()] == ["embed"]
    assert client.models.retrieve("embed").id == "embed"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("echo")


async def test_async_client_stream_and_non_stream(gw) -> None:  # type: ignore[no-untyped-def]
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=gw.tenant_key)
    resp = await client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "async works"}]
    )
    assert resp.choices[0].message.content == "async works"
    stream = await client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "async streams too"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "async streams too"
    await client.close()
