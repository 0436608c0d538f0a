"""The feed/close skeleton the SSE stream decoders share (sse.SseDecoder): any
split of the bytes gives the same events, nothing after the end is read, and a
stream cut short (mid-event, or before its end) ends in one StreamError."""

from __future__ import annotations

import pytest

from forebay.protocols.anthropic_stream import MessagesStreamDecoder
from forebay.protocols.canonical import StreamEnd, StreamError, StreamEvent, TextDelta
from forebay.protocols.openai_chat_stream import ChatStreamDecoder
from forebay.protocols.openai_responses_stream_decode import ResponsesStreamDecoder
from forebay.protocols.sse import SseDecoder

CHAT = (
    b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
MESSAGES = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c",'
    b'"usage":{"input_tokens":1,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":1}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
RESPONSES = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"r",'
    b'"model":"m","output":[]}}\n\n'
    b'event: response.content_part.added\ndata: {"type":"response.content_part.added",'
    b'"output_index":0,"content_index":0,"part":{"type":"output_text","text":""}}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"output_index":0,"content_index":0,"delta":"hi"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r",'
    b'"status":"completed","output":[]}}\n\n'
)
CASES = [
    (ChatStreamDecoder, CHAT),
    (MessagesStreamDecoder, MESSAGES),
    (ResponsesStreamDecoder, RESPONSES),
]
IDS = ["chat", "messages", "responses"]


def run(decoder: SseDecoder, chunks: list[bytes]) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out + decoder.close()


@pytest.mark.parametrize(("make", "wire"), CASES, ids=IDS)
def test_any_split_gives_the_same_events(make: type[SseDecoder], wire: bytes) -> None:
    whole = run(make(), [wire])
    assert isinstance(whole[-1], StreamEnd)
    assert [e for e in whole if isinstance(e, TextDelta)] == [TextDelta(0, "hi")]
    assert run(make(), [wire[i : i + 1] for i in range(len(wire))]) == whole
    crlf = wire.replace(b"\n", b"\r\n")
    assert run(make(), [crlf]) == whole
    assert run(make(), [crlf[i : i + 7] for i in range(0, len(crlf), 7)]) == whole
    assert run(make(), [crlf[i : i + 1] for i in range(len(crlf))]) == whole


@pytest.mark.parametrize(("make", "wire"), CASES, ids=IDS)
def test_nothing_after_the_end_is_read(make: type[SseDecoder], wire: bytes) -> None:
    events = run(make(), [wire, b'data: {"garbage": true}\n\n', b"data: not json\n\n"])
    assert events == run(make(), [wire])


@pytest.mark.parametrize(("make", "wire"), CASES, ids=IDS)
def test_a_stream_cut_short_ends_in_one_error(make: type[SseDecoder], wire: bytes) -> None:
    first = wire.find(b"\n\n") + 2  # the stream's first event, whole
    for cut in (wire[:first], wire[: first + 25], wire[:first] + b"data: {trailing junk"):
        events = run(make(), [cut])
        errors = [e for e in events if isinstance(e, StreamError)]
        assert len(errors) == 1 and events[-1] is errors[0], cut[-40:]
        assert not any(isinstance(e, StreamEnd) for e in events)
