"""Reading a decoded JSON body field by field: the type a reference asks for,
or a 400 that names the field."""

from __future__ import annotations

from typing import Any

from forebay.errors import bad_request


def as_dict(value: Any, where: str | None = None) -> dict[str, Any]:
    """`value` if it is an object; else {} (where=None) or a 400 naming `where`."""
    if isinstance(value, dict):
        return value
    if where is None:
        return {}
    raise bad_request(f"{where} must be an object.", param=where)


def as_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, list):
        return value
    raise bad_request(f"{where} must be a list.", param=where)


def opt_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise bad_request(f"{where} must be a string.", param=where)


_INT64 = 2**63  # what every upstream's JSON (and orjson, re-encoding it) can carry


def opt_int(value: Any, where: str = "value") -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's integer accepts 2.0
    if isinstance(value, int) and not isinstance(value, bool):
        if -_INT64 <= value < _INT64:
            return value
        raise bad_request(f"{where} is out of range for an integer.", param=where)
    raise bad_request(f"{where} must be an integer.", param=where)


def opt_number(value: Any, where: str) -> float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise bad_request(f"{where} must be a number.", param=where)


def opt_bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise bad_request(f"{where} must be true or false.", param=where)


MAX_OPAQUE = 1 << 20  # a reasoning signature or encrypted blob: a few KB in practice


def opt_opaque(value: Any, where: str) -> str | None:
    """An opaque value a client sends back verbatim (a reasoning signature,
    encrypted reasoning): a string of sane size, else a 400."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{where} must be a string.", param=where)
    if len(value) > MAX_OPAQUE:
        raise bad_request(f"{where} is longer than {MAX_OPAQUE} characters.", param=where)
    return value


def split_data_url(url: str) -> tuple[str | None, str | None]:
    """(media type, base64 data) of a `data:<type>[;<param>...];base64,<data>` URL,
    or (None, None) for any other URL. Parameters (`;charset=...`) are dropped:
    every wire that takes inline media wants the bare type. The one parser of
    data URLs, for client bodies (Chat, Responses) and upstream ones (Anthropic,
    Gemini, Bedrock) alike."""
    if not url.startswith("data:"):
        return None, None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None, None
    return head.partition(";")[0].strip() or None, data


def data_url(media_type: str, data: str) -> str:
    """A base64 `data:` URL (the inverse of split_data_url)."""
    return f"data:{media_type};base64,{data}"
