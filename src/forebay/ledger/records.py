"""The line format of the spool and the dead-letter file: one JSON object per
line, keyed by what it records.

    {"fields": ["ts", "request_id", ...]}        first line of every spool segment
    {"begun":  {"request_id": ..., "ts": ..., "tenant_id": ..., ...}}
    {"routed": {"request_id": ..., "deployment": ..., "route_reason": ...}}
    {"done":   [values, in the order of "fields"]}
    {"done":   {every column by name}, "error": ..., "at": ...}   a dead letter

A `done` record is written on the request path, so it is positional (about a
quarter of the cost of orjson writing the dataclass by name); the segment's
header names the positions. Names are column names, so a record written by an
older or newer version still reads: unknown names are ignored, missing ones
take what that older version meant (`MISSING`) or are fitted (0 tokens, say).
A dead-letter file is a valid spool segment: moved into the spool directory it
is replayed at the next start (see `replay.py`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import orjson

from forebay.db.schema import usage_events
from forebay.ledger.events import UsageEvent
from forebay.ledger.fit import RowFitter

HEADER = "fields"
BEGUN = "begun"
ROUTED = "routed"
DONE = "done"

EVENT_FIELDS = tuple(f.name for f in fields(UsageEvent))
_values = operator.attrgetter(*EVENT_FIELDS)  # one C call: the event as a tuple

EVENT_COLUMNS = tuple(c.name for c in usage_events.c if c.name != "id")
fit_event_row = RowFitter(usage_events)  # bounds from the table definition

_LINE = orjson.OPT_APPEND_NEWLINE


def line(kind: str, fields: dict[str, Any]) -> bytes:
    return orjson.dumps({kind: fields}, option=_LINE)


def header_line() -> bytes:
    return orjson.dumps({HEADER: EVENT_FIELDS}, option=_LINE)


def done_line(event: UsageEvent) -> bytes:
    try:
        return orjson.dumps({DONE: _values(event)}, option=_LINE)
    except TypeError:  # e.g. an integer beyond 64 bits (JSONEncodeError is a TypeError)
        return orjson.dumps({DONE: fit_event_row(event.row())}, option=_LINE, default=str)


def dead_letter_line(row: dict[str, Any], error: str, at: float) -> bytes:
    return orjson.dumps({DONE: row, "error": error, "at": at}, option=_LINE, default=str)


def read_records(data: bytes) -> Iterator[tuple[str, dict[str, Any]] | None]:
    """(kind, fields) for each line of a segment, or None for a line that is not
    a record (a write torn by a kill or a power loss, or anything else). The
    zeros past the last record of a segment whose process died are not lines."""
    names: list[str] | None = None
    for raw in data.rstrip(b"\x00").split(b"\n"):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            yield None
            continue
        if not isinstance(obj, dict):
            yield None
            continue
        header = obj.get(HEADER)
        if isinstance(header, list):
            names = [str(n) for n in header]
            continue
        yield _record(obj, names)


def _record(obj: dict[str, Any], names: list[str] | None) -> tuple[str, dict[str, Any]] | None:
    for kind in (DONE, BEGUN, ROUTED):
        value = obj.get(kind)
        if isinstance(value, list) and names is not None and len(value) == len(names):
            value = dict(zip(names, value, strict=True))
        if isinstance(value, dict) and isinstance(value.get("request_id"), str):
            return kind, value
    return None


# What a record from before a column existed meant by leaving it out: every
# request came in through OpenAI Chat or Completions before `protocol`.
MISSING: dict[str, Any] = {"protocol": "openai_chat"}


def event_row(fields: dict[str, Any]) -> dict[str, Any]:
    """A usage_events row from a record's fields, fitted to the columns."""
    return fit_event_row({c: fields.get(c, MISSING.get(c)) for c in EVENT_COLUMNS})
