"""Relay an upstream's server-sent events without re-serialising them.

Events are split on blank lines and passed through as the same bytes (less
any configured secret, see redact.py); only an event that mentions "usage" is
parsed, to meter it (and to drop the extra usage-only chunk when the client
did not ask for it). An event cut off by the end of the stream is not relayed:
half a JSON object would break the client's parser, so the dispatcher ends the
stream with an error event instead.
"""

from __future__ import annotations

from typing import Any

import orjson

from forebay.gateway.metering import usage_counts
from forebay.gateway.redact import Redactor
from forebay.protocols.canonical import Usage

DONE = b"data: [DONE]"


class SseRelay:
    def __init__(self, *, client_wants_usage: bool, redactor: Redactor) -> None:
        self._redact = redactor.redact
        self.torn = False  # the stream ended inside an event
        self._buf = b""
        self._keep_usage_chunk = client_wants_usage
        self.usage: Usage | None = None
        self.content_events = 0
        self.saw_done = False
        self.upstream_error: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Bytes ready for the client (whole events only); the rest waits."""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._buf + chunk if self._buf else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buf = data
            return b""
        self._buf = data[end + 2 :]
        complete = self._redact(data[: end + 2])
        if b'"usage"' not in complete and b'"error"' not in complete and DONE not in complete:
            self.content_events += complete.count(b"\n\n")
            return complete
        out = []
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if self._inspect(event):
                out.append(event)
                out.append(b"\n\n")
        return b"".join(out)

    def _inspect(self, event: bytes) -> bool:
        """Meter one event; False drops it."""
        if event.startswith(DONE):
            self.saw_done = True
            return True
        if b'"usage"' not in event and b'"error"' not in event:
            self.content_events += 1
            return True
        payload = _data_of(event)
        if payload is None:
            self.content_events += 1
            return True
        if isinstance(payload.get("error"), dict):
            self.upstream_error = payload["error"]
            return True
        counts = usage_counts(payload.get("usage"))
        if counts is not None:
            self.usage = counts
            if not payload.get("choices"):
                return self._keep_usage_chunk
        self.content_events += 1
        return True

    def error_event(self, message: str, code: str) -> bytes:
        return error_event(message, code)

    def tail(self) -> bytes:
        """The last event when the upstream ended it without its blank line; an
        event cut short is dropped and `torn` set."""
        rest, self._buf = self._buf, b""
        event = self._redact(rest.strip())
        if not event:
            return b""
        if not event.startswith(DONE) and (not _is_event(event) or _data_of(event) is None):
            self.torn = True  # cut short, or not server-sent events at all
            return b""
        return event + b"\n\n" if self._inspect(event) else b""


_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")


def _is_event(event: bytes) -> bool:
    return all(line.startswith(_FIELDS) for line in event.split(b"\n"))


def _data_of(event: bytes) -> dict[str, Any] | None:
    lines = [ln[5:].lstrip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
    if not lines:
        return None
    try:
        obj = orjson.loads(b"\n".join(lines))
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def error_event(message: str, code: str) -> bytes:
    body = orjson.dumps(
        {"error": {"message": message, "type": "upstream_error", "code": code, "param": None}}
    )
    return b"data: " + body + b"\n\n" + DONE + b"\n\n"
