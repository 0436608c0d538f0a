"""API key format and hashing.

Keys are 256 random bits, so a plain SHA-256 is enough to make a stolen
database useless (no dictionary to try) while keeping lookup O(1); a slow
password hash would only add latency to every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "sk-fb-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """Enough of the key for a person to tell keys apart, too little to use."""
    return key[: len(KEY_PREFIX) + 4]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: what the gateway knows about a key after authenticating it."""

    key_id: str
    tenant_id: str | None
    tenant_name: str | None
    models: frozenset[str] | None  # None: every configured model
    is_admin: bool
    default_class: str | None = None  # None: admission.default_class
    classes: frozenset[str] | None = None  # None: every class

    def may_use(self, alias: str) -> bool:
        return self.models is None or alias in self.models
