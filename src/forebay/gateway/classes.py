"""Which traffic class a request belongs to: the key's default, or the one it
asks for with `x-forebay-class`, if the key may use it."""

from __future__ import annotations

from collections.abc import Mapping

from forebay.config.traffic import TrafficClassConfig
from forebay.errors import ForebayError, forbidden
from forebay.tenancy.keys import Principal

CLASS_HEADER = "x-forebay-class"
CLASS_HEADER_RAW = CLASS_HEADER.encode()


def resolve_class(
    principal: Principal,
    asked: str | None,
    classes: Mapping[str, TrafficClassConfig],
    default: str,
) -> tuple[str, TrafficClassConfig]:
    if asked is None:
        name = principal.default_class or default
        if name not in classes:  # the config dropped a class a key still names
            name = default
        return name, classes[name]
    name = asked.strip().lower()
    if name not in classes:
        raise ForebayError(
            400,
            f"Unknown traffic class '{name[:40]}' in {CLASS_HEADER}; "
            f"this gateway has: {', '.join(sorted(classes))}.",
            param=CLASS_HEADER,
            code="unknown_class",
        )
    if principal.classes is not None and name not in principal.classes:
        allowed = ", ".join(sorted(principal.classes)) or "none"
        raise forbidden(
            f"Your API key may not use traffic class '{name}' (it may use: {allowed}); "
            "drop the x-forebay-class header or ask your Forebay admin to allow the class.",
            code="class_not_allowed",
        )
    return name, classes[name]
