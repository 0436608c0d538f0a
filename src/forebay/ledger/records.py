"""The line format of the spool and the dead-letter file: one JSON object per
line, keyed by what it records.

    {"begun":  {"request_id": ..., "ts": ..., "tenant_id": ..., ...}}
    {"routed": {"request_id": ..., "deployment": ..., "route_reason": ...}}
    {"done":   {every column of usage_events}}          (+ "error", "at" in a dead letter)

Field names are column names, so a reader builds a row by name, and a record
written by an older or newer version still reads (missing columns are fitted,
unknown keys ignored). A dead-letter file is a valid spool segment: moved into
the spool directory it is replayed at the next start (see `replay.py`).
"""

from __future__ import annotations

from typing import Any

import orjson

from forebay.db.schema import usage_events
from forebay.ledger.events import UsageEvent
from forebay.ledger.fit import RowFitter

BEGUN = "begun"
ROUTED = "routed"
DONE = "done"

EVENT_COLUMNS = tuple(c.name for c in usage_events.c if c.name != "id")
fit_event_row = RowFitter(usage_events)  # bounds from the table definition

_LINE = orjson.OPT_APPEND_NEWLINE


def line(kind: str, fields: dict[str, Any]) -> bytes:
    return orjson.dumps({kind: fields}, option=_LINE)


def done_line(event: UsageEvent) -> bytes:
    try:  # orjson writes the dataclass itself: no dict built on the request path
        return orjson.dumps({DONE: event}, option=_LINE)
    except TypeError:  # e.g. an integer beyond 64 bits (JSONEncodeError is a TypeError)
        return orjson.dumps({DONE: fit_event_row(event.row())}, option=_LINE, default=str)


def dead_letter_line(row: dict[str, Any], error: str, at: float) -> bytes:
    return orjson.dumps({DONE: row, "error": error, "at": at}, option=_LINE, default=str)


def parse(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """(kind, fields) of one line, or None for a line that is not a record (a
    write torn by a power loss, or anything else)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    for kind in (DONE, BEGUN, ROUTED):
        fields = obj.get(kind)
        if isinstance(fields, dict) and isinstance(fields.get("request_id"), str):
            return kind, fields
    return None


def event_row(fields: dict[str, Any]) -> dict[str, Any]:
    """A usage_events row from a record's fields, fitted to the columns."""
    return fit_event_row({c: fields.get(c) for c in EVENT_COLUMNS})
