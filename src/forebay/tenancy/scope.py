"""What a key may be scoped to, checked in one place for the CLI and the admin
API: every model alias and class it names must exist, and its default class
must be one it may use (else its requests without x-forebay-class would run in
a class the key is refused when it asks for it)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from forebay.errors import TenancyError


class KeyScopeError(TenancyError):
    """A scope that cannot be granted; `param` is the field at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class KeyScope:
    models: list[str] | None
    classes: list[str] | None
    default_class: str | None


def check_key_scope(
    models: list[str] | None,
    classes: list[str] | None,
    default_class: str | None,
    *,
    known_models: Collection[str],
    known_classes: Collection[str],
    gateway_default: str,
) -> KeyScope:
    """None means "all" for models and classes, and the gateway's default class."""
    _all_known(models, known_models, "models", "model alias", "the configured aliases are")
    _all_known(classes, known_classes, "classes", "class", "this gateway has")
    if default_class is not None and default_class not in known_classes:
        raise KeyScopeError(
            f"Unknown default class '{default_class[:40]}'; this gateway has: "
            f"{_names(sorted(known_classes))}.",
            "default_class",
        )
    if classes is not None:
        default = default_class or gateway_default
        if default not in classes:
            given = "" if default_class else " (the gateway's admission.default_class)"
            raise KeyScopeError(
                f"The default class '{default}'{given} is not among the key's classes "
                f"({_names(sorted(classes))}); choose a default_class from them.",
                "default_class",
            )
    return KeyScope(
        sorted(set(models)) if models is not None else None,
        sorted(set(classes)) if classes is not None else None,
        default_class,
    )


def _all_known(
    given: list[str] | None, known: Collection[str], param: str, what: str, known_are: str
) -> None:
    unknown = sorted(set(given or ()) - set(known))
    if unknown:
        raise KeyScopeError(
            f"Unknown {what} {_names(unknown)} in {param}; {known_are}: {_names(sorted(known))}.",
            param,
        )


def _names(items: list[str]) -> str:
    """Quoted, shortened, and with control characters shown as '?': these echo input."""
    shown = ("".join(c if c.isprintable() else "?" for c in i[:40]) for i in items[:20])
    return ", ".join(f"'{s}'" for s in shown) or "none"
