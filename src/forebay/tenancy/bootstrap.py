"""First start: make sure a person can get in, and tell them how, once."""

from __future__ import annotations

from dataclasses import dataclass

from forebay.tenancy.store import TenancyStore

FIRST_TENANT = "default"


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
