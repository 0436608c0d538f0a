"""The codecs' shortcuts for their most frequent events give what the general
code gives: the SSE frame cut, and a Responses text delta's bytes."""

from __future__ import annotations

import orjson
import pytest

from forebay.protocols import sse
from forebay.protocols.canonical import PartStart, StreamStart, TextDelta
from forebay.protocols.openai_responses_stream import ResponsesStreamEncoder


def general(block: bytes) -> sse.Frame | None:
    """parse_frame's walk over lines, for blocks the shortcut does not take."""
    return sse.parse_frame(block + b"\n: comment")


@pytest.mark.parametrize(
    "block",
    [
        b'data: {"a":1}',
        b'data:{"a":1}',
        b'data:   {"a":1}',
        b'event: message_start\ndata: {"type":"message_start"}',
        b'event:ping\ndata:{"type":"ping"}',
        b"event:  padded  \ndata: [DONE]",
        b"data: [DONE]",
    ],
)
def test_frame_shortcut_equals_the_walk(block: bytes) -> None:
    assert sse.parse_frame(block) == general(block)


@pytest.mark.parametrize(
    ("block", "frame"),
    [
        (b"event: a\ndata: 1\ndata: 2", (b"a", b"1\n2")),
        (b"event: a\nbogus", (b"a", b"\0")),
        (b": only a comment", None),
        (b"id: 7\ndata: x", (None, b"x")),
        (b"event: a\nid: 1", (b"a", b"")),
    ],
)
def test_other_shapes_take_the_walk(block: bytes, frame: sse.Frame | None) -> None:
    assert sse.parse_frame(block) == frame


def test_responses_text_delta_bytes_are_those_of_the_event_dict() -> None:
    enc = ResponsesStreamEncoder()
    enc.encode(StreamStart("id", "m"))
    enc.encode(PartStart(0, "text"))
    seq = enc._seq
    text = 'quote " backslash \\ newline \n é 🦫'
    out = enc.encode(TextDelta(0, text)) + enc.encode(TextDelta(0, "b"))
    first, second = out.split(b"\n\n")[:2]
    item_id = enc._open[0].item["id"]
    for raw, (n, delta) in ((first, (seq, text)), (second, (seq + 1, "b"))):
        name, data = raw.split(b"\n")
        assert name == b"event: response.output_text.delta"
        expected = {
            "type": "response.output_text.delta",
            "sequence_number": n,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": delta,
            "logprobs": [],
        }
        assert data == b"data: " + orjson.dumps(expected)
