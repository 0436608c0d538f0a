"""Server-sent events framing, shared by the codecs of SSE protocols."""

from __future__ import annotations

from typing import Any

import orjson

Frame = tuple[bytes | None, bytes]  # (event name, data joined by newlines)


class SseFrames:
    """Splits a byte stream into whole events; a partial one waits for more."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._buf + chunk if self._buf else chunk
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
