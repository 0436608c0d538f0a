"""What a name, id or reference typed by a person may contain before it
reaches the database: no longer than its column, and no NUL or control
characters (PostgreSQL refuses NUL in text, and neither belongs in a name that
is printed in tables and logs). Checked here, once, for the CLI and the admin API."""

from __future__ import annotations

import re

from forebay.errors import TenancyError

# Lengths of the columns they are stored in or compared with (db/schema.py).
NAME_CHARS = 200  # tenants.name, api_keys.name, a model alias
ID_CHARS = 40  # tenants.id, api_keys.id
CLASS_CHARS = 40  # api_keys.default_class
REF_CHARS = NAME_CHARS  # an id or a name, as people type either

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def checked(value: str, what: str, max_chars: int) -> str:
    """`value` unchanged, or a TenancyError saying what is wrong with it."""
    if len(value) > max_chars:
        raise TenancyError(f"{what} must be at most {max_chars} characters, not {len(value)}")
    if _CONTROL.search(value):
        raise TenancyError(f"{what} must not contain control characters (such as NUL or newline)")
    return value


def checked_all(values: list[str] | None, what: str, max_chars: int) -> list[str] | None:
    if values is not None:
        for v in values:
            checked(v, what, max_chars)
    return values
