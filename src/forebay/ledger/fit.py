"""Fit a usage row to the columns it goes into, so that no value can make the
database refuse a batch: text longer than its column, a NUL (PostgreSQL text
cannot hold one), a lone surrogate (not encodable as UTF-8), an integer past
the column's range (an upstream can report 2^40 tokens), NaN or infinity, or
a value of the wrong type altogether.

The bounds come from the table definition (`db/schema.py`), so there is no
second list of lengths to keep in step with it. Fitting runs on the ledger
writer's thread, not on the request path; a row that needs nothing costs one
type and range check per column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Integer, SmallInteger, String, Table

_INT_BITS = ((SmallInteger, 16), (BigInteger, 64), (Integer, 32))  # subclasses first


class RowFitter:
    """Fits rows (dicts keyed by column name) in place to one table's columns."""

    def __init__(self, table: Table, *, skip: Iterable[str] = ("id",)) -> None:
        skipped = set(skip)
        self._text: list[tuple[str, int | None, bool]] = []
        self._ints: list[tuple[str, int, int, bool]] = []
        self._floats: list[tuple[str, bool]] = []
        self._bools: list[tuple[str, bool]] = []
        for col in table.c:
            if col.name in skipped:
                continue
            kind, nullable = col.type, bool(col.nullable)
            if isinstance(kind, String):  # Text is a String without a length
                self._text.append((col.name, kind.length, nullable))
            elif isinstance(kind, Boolean):
                self._bools.append((col.name, nullable))
            elif isinstance(kind, Integer):
                bits = next(b for t, b in _INT_BITS if isinstance(kind, t))
                self._ints.append((col.name, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, nullable))
            elif isinstance(kind, Float):
                self._floats.append((col.name, nullable))
            else:
                raise TypeError(f"no rule to fit column {col.name} of type {kind!r}")

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        for name, length, nullable in self._text:
            v = row.get(name)
            if v is None and nullable:
                continue
            if (
                type(v) is not str
                or (length is not None and len(v) > length)
                or "\x00" in v
                or not v.isascii()
            ):
                row[name] = fit_text(v, length, nullable)
        for name, lo, hi, nullable in self._ints:
            v = row.get(name)
            if v is None and nullable:
                continue
            if type(v) is not int or not lo <= v <= hi:
                row[name] = fit_int(v, lo, hi, nullable)
        for name, nullable in self._floats:
            v = row.get(name)
            if v is None and nullable:
                continue
            if type(v) is not float or not math.isfinite(v):
                row[name] = fit_float(v, nullable)
        for name, nullable in self._bools:
            v = row.get(name)
            if type(v) is not bool and not (v is None and nullable):
                row[name] = bool(v)
        return row


def fit_text(v: Any, length: int | None, nullable: bool) -> str | None:
    if v is None:
        return None if nullable else ""
    s = v if isinstance(v, str) else str(v)
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            s = s.encode("utf-8", "replace").decode("utf-8")
    return s if length is None else s[:length]


def fit_int(v: Any, lo: int, hi: int, nullable: bool) -> int | None:
    if v is None:
        return None if nullable else 0
    if not isinstance(v, int):
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            return None if nullable else 0
        if not math.isfinite(f):
            return None if nullable else 0
        v = int(f)
    return min(max(int(v), lo), hi)


def fit_float(v: Any, nullable: bool) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        f = math.nan
    if math.isfinite(f):
        return f
    return None if nullable else 0.0
