"""First start: make sure a person can get in, and tell them how, once."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from forebay.tenancy.store import TenancyStore

FIRST_TENANT = "default"
KEYS_FILE = "first-start-keys.txt"


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    admin_key: str | None
    tenant_key: str | None

    def announce(self) -> list[str]:
        lines = []
        if self.admin_key:
            lines.append(f"admin key (shown once, keep it safe):  {self.admin_key}")
        if self.tenant_key:
            lines.append(f"key for tenant '{FIRST_TENANT}' (shown once): {self.tenant_key}")
        return lines

    def save(self, directory: Path) -> Path:
        """Write the keys to a file only the owner can read, for a server whose
        output goes to a log rather than a person. Created with mode 0600 (never
        readable by others, not even for an instant) and moved into place whole."""
        path = directory / KEYS_FILE
        tmp = directory / f".{KEYS_FILE}.{secrets.token_hex(4)}"
        text = "\n".join(
            [
                "# Forebay's first-start keys; each is shown only here. Store them, then",
                "# delete this file.",
                *self.announce(),
                "",
            ]
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path


def bootstrap(store: TenancyStore, *, env_admin_key: str | None) -> Bootstrapped:
    """Create an admin key (unless FOREBAY_ADMIN_KEY provides one) and a first
    tenant with a key, only when the store has none yet."""
    admin_key = None
    if not env_admin_key and not store.has_admin_key():
        admin_key = store.create_key(None, is_admin=True, name="bootstrap admin").key
    tenant_key = None
    if not store.list_tenants():
        store.create_tenant(FIRST_TENANT)
        tenant_key = store.create_key(FIRST_TENANT, name="bootstrap").key
    return Bootstrapped(admin_key, tenant_key)
