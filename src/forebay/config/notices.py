"""What a person should hear about a config that is valid but may not do what
they meant: printed by `forebay serve` and `forebay config check`."""

from __future__ import annotations

import re
from typing import Any

from forebay.config.defaults import DEFAULT_CONFIG
from forebay.config.settings import Settings

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def notices_for(settings: Settings, raw_file: dict[str, Any] | None) -> tuple[str, ...]:
    """`raw_file` is the file's YAML before `${VAR}` interpolation (None: built-in default)."""
    if raw_file is None:
        return ()
    found: list[str] = []
    raw_models = raw_file.get("models") or {}
    for alias, model in settings.models.items():
        raw_deps = raw_models.get(alias, {}).get("deployments") or []
        for dep, raw_dep in zip(model.deployments, raw_deps, strict=False):
            # Azure's bearer token, when written, is its key.
            field = "azure_ad_token" if dep.azure_bearer else "api_key"
            written = raw_dep.get(field) if isinstance(raw_dep, dict) else None
            if dep.provider == "local" or dep.api_key or not isinstance(written, str):
                continue
            names = _VARIABLE.findall(written)
            why = f" and {' / '.join(names)} is empty or not set" if names else " is empty"
            found.append(
                f"deployment {dep.name!r} (model {alias!r}) has no API key: its {field} is "
                f"{written!r}{why}; requests routed to it will fail until it is set"
            )
    if not any(d.provider == "local" for m in settings.models.values() for d in m.deployments):
        builtin = ", ".join(DEFAULT_CONFIG["models"])
        found.append(
            f"the built-in local models ({builtin}) are not served: a models: block replaces "
            "them; add `include_local_models: true` to serve them beside it"
        )
    return tuple(found)


def served_models(settings: Settings) -> str:
    """One line: each alias with the deployments behind it."""
    parts = [
        f"{alias} ({', '.join(d.name for d in model.deployments)})"
        for alias, model in settings.models.items()
    ]
    return "models served: " + ("; ".join(parts) or "none")
