"""A small AWS event-stream encoder (botocore only decodes): each frame is a
prelude (total length, headers length, both big-endian u32, and the prelude's
CRC32), headers (name length u8, name, type 7 = string, value length u16,
value), the payload, and the CRC32 of everything before it."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import orjson


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    head = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        head += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, body: dict[str, Any]) -> bytes:
    # Bedrock pads every event with a "p" field of letters, so sizes tell nothing.
    payload = orjson.dumps({**body, "p": "abcdefghij"[: 1 + len(event_type) % 10]})
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return frame(headers, payload)


def exception(name: str, message: str) -> bytes:
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, orjson.dumps({"message": message}))


def garbled(data: bytes) -> bytes:
    """`data` with one payload byte flipped: its message CRC no longer matches."""
    spot = len(data) - 6
    return data[:spot] + bytes([data[spot] ^ 0xFF]) + data[spot + 1 :]
