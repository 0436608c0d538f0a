"""Server-sent events framing, shared by the codecs of SSE protocols, and the
feed/close skeleton of their stream decoders (SseDecoder)."""

from __future__ import annotations

from typing import Any

import orjson

from forebay.protocols.canonical import StreamError, StreamEvent

Frame = tuple[bytes | None, bytes]  # (event name, data joined by newlines)


class SseFrames:
    """Splits a byte stream into whole events; a partial one waits for more."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        buf = self._buf
        if buf:
            data = buf + chunk
            if b"\r" in chunk or buf[-1] == 13:  # a CRLF may be split across two reads
                data = data.replace(b"\r\n", b"\n")
        else:
            data = chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buf = data
            return []
        self._buf = data[end + 2 :]
        return [f for block in data[:end].split(b"\n\n") if (f := parse_frame(block))]

    def rest(self) -> bytes:
        """What is left at the end of the stream (an event without its blank line)."""
        rest, self._buf = self._buf.strip(), b""
        return rest


class SseDecoder:
    """What every SSE stream decoder does the same way (Chat, Anthropic,
    Responses): split the bytes into events, hand each one's data to `_event`
    until the stream has ended (`_ended`), and at the close turn a stream cut
    short (inside an event, or before its last one) into a StreamError.
    Subclasses write `_event` and, when the wire has no single end event or
    takes a last event without JSON, `_eof` and `_whole`."""

    CUT_SHORT = "the upstream stream ended before its last event"

    def __init__(self) -> None:
        self._frames = SseFrames()
        self._ended = False

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        raise NotImplementedError

    def _whole(self, data: bytes) -> bool:
        """Whether the data of an event left without its blank line is whole."""
        return json_of(data) is not None

    def _eof(self, out: list[StreamEvent]) -> None:
        """The stream ended, and no event ended it."""
        self._ended = True
        out.append(StreamError(self.CUT_SHORT))

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for _, data in self._frames.feed(chunk):
            if self._ended:
                break
            self._event(data, out)
        return out

    def close(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        rest = self._frames.rest()
        if rest and not self._ended:
            frame = parse_frame(rest)
            if frame is None or not self._whole(frame[1]):
                self._ended = True
                return [StreamError("the upstream stream ended in the middle of an event")]
            self._event(frame[1], out)
        if not self._ended:
            self._eof(out)
        return out


def parse_frame(block: bytes) -> Frame | None:
    """One event's (name, data); None for a block of comments or blank lines.
    A line that is no SSE field makes the data b"\\0" (never valid JSON)."""
    # The common shapes, one `data:` line with or without an `event:` line before
    # it, are cut without the general walk over lines (same result).
    first = block.find(b"\n")
    if first < 0:
        if block.startswith(b"data:"):
            return None, block[5:].lstrip(b" ")
    elif (
        block.startswith(b"event:")
        and block.startswith(b"data:", first + 1)
        and block.find(b"\n", first + 1) < 0
    ):
        return block[6:first].strip(), block[first + 6 :].lstrip(b" ")
    name: bytes | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip()
        elif line.startswith((b":", b"id:", b"retry:")) or not line:
            continue
        else:
            return name, b"\0"
    if name is None and not data:
        return None
    return name, b"\n".join(data)


def json_of(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def data_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def named_event(name: bytes, obj: Any) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
