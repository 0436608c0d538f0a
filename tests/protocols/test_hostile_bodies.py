"""Whatever JSON a client or an upstream sends, a codec answers with a clear
error (a 400 ForebayError for a request, an UpstreamFailure or a StreamError
for an upstream's answer) or a result: never another exception."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from forebay.errors import ForebayError, UpstreamFailure
from forebay.protocols.registry import codec_for
from forebay.upstreams.base import WireProtocol

CODECS = [codec_for(WireProtocol.OPENAI_CHAT), codec_for(WireProtocol.ANTHROPIC_MESSAGES)]
KEYS = [
    "type",
    "role",
    "content",
    "text",
    "index",
    "delta",
    "tool_calls",
    "function",
    "id",
    "name",
    "arguments",
    "input",
    "source",
    "data",
    "url",
    "choices",
    "message",
    "usage",
    "error",
    "content_block",
    "stop_reason",
    "finish_reason",
    "tool_use_id",
    "image_url",
]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "messages",
    "system",
    "tools",
    "tool_choice",
    "max_tokens",
    "stop",
    "stop_sequences",
    "temperature",
    "thinking",
    "metadata",
    "response_format",
    "top_k",
    "n",
]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5), st.integers(0, 1))
def test_requests(fields: dict[str, Any], which: int) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [], **fields}
    codec = CODECS[which]
    try:
        req = codec.decode_request(body)
    except ForebayError as err:
        assert err.status == 400
        return
    for other in CODECS:
        try:
            orjson.dumps(other.encode_request(req, "up"))
        except ForebayError as err:
            assert err.status == 400


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(0, 1))
def test_replies(body: Any, which: int) -> None:
    if not isinstance(body, dict):
        body = {"choices": [{"message": body}], "type": "message", "content": [body]}
    try:
        CODECS[which].decode_reply(body)
    except UpstreamFailure as failure:
        assert failure.kind == "protocol"


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON, min_size=1, max_size=4), st.integers(0, 1))
def test_streams(events: list[Any], which: int) -> None:
    decoder = CODECS[which].stream_decoder()
    data = b"".join(b"event: x\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)
    decoded = decoder.feed(data) + decoder.close()
    encoder = CODECS[1 - which].stream_encoder(include_usage=True)
    for event in decoded:
        assert isinstance(encoder.encode(event), bytes)


def test_a_whole_float_too_big_for_an_integer_is_a_400() -> None:
    """Found by test_requests: 1.8e19 is whole, but past 64 bits no upstream (nor
    orjson, re-encoding it) can carry it."""
    body = {"model": "m", "max_tokens": 1.8446744073709552e19, "messages": []}
    for codec in CODECS:
        try:
            codec.decode_request(body)
        except ForebayError as err:
            assert err.status == 400 and err.param == "max_tokens"
        else:
            raise AssertionError(f"{codec.name} accepted max_tokens 1.8e19")
