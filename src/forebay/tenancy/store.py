"""Tenants and keys in the database. Never called on the request path: the
gateway reads an in-memory `KeyRing` that is refreshed from here, at once by the
replica that made a change and, through the change counter every write bumps,
within `key_refresh_s` by every other (see `forebay.db.changes`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from forebay.db.changes import bump
from forebay.db.schema import api_keys, tenants
from forebay.errors import TenancyError
from forebay.tenancy.keys import Principal, display_prefix, hash_key, new_id, new_key
from forebay.tenancy.names import CLASS_CHARS, ID_CHARS, NAME_CHARS, REF_CHARS, checked, checked_all


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    tenant_id: str | None
    tenant_name: str | None
    prefix: str
    name: str
    models: list[str] | None
    is_admin: bool
    created_at: float
    revoked_at: float | None
    default_class: str | None = None
    classes: list[str] | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """The only moment the plaintext key exists outside the caller's hands."""

    info: KeyInfo
    key: str


class TenancyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_tenant(self, name: str) -> Tenant:
        name = checked(name.strip(), "a tenant name", NAME_CHARS)
        if not name:
            raise TenancyError("a tenant name must not be empty")
        tenant = Tenant(new_id("ten"), name, time.time())
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(tenants).values(id=tenant.id, name=name, created_at=tenant.created_at)
                )
                bump(conn)
        except IntegrityError:
            raise TenancyError(f"a tenant named {name!r} already exists") from None
        return tenant

    def list_tenants(self) -> list[Tenant]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(tenants).order_by(tenants.c.created_at)).all()
        return [Tenant(r.id, r.name, r.created_at) for r in rows]

    def find_tenant(self, ref: str) -> Tenant | None:
        """By id or by name, so people can type either."""
        checked(ref, "a tenant id or name", REF_CHARS)
        with self._engine.connect() as conn:
            row = conn.execute(
                select(tenants).where((tenants.c.id == ref) | (tenants.c.name == ref))
            ).first()
        return Tenant(row.id, row.name, row.created_at) if row else None

    def create_key(
        self,
        tenant: str | None,
        *,
        models: list[str] | None = None,
        name: str = "",
        is_admin: bool = False,
        key: str | None = None,
        default_class: str | None = None,
        classes: list[str] | None = None,
    ) -> IssuedKey:
        checked(name, "a key name", NAME_CHARS)
        checked_all(models, "a model name", NAME_CHARS)
        checked_all(classes, "a class name", CLASS_CHARS)
        if default_class is not None:
            checked(default_class, "a class name", CLASS_CHARS)
        tenant_row = None
        if tenant is not None:
            tenant_row = self.find_tenant(tenant)
            if tenant_row is None:
                raise TenancyError(f"no tenant {tenant!r}; create it first")
        elif not is_admin:
            raise TenancyError("a tenant key needs a tenant")
        plaintext = key or new_key()
        info = KeyInfo(
            id=new_id("key"),
            tenant_id=tenant_row.id if tenant_row else None,
            tenant_name=tenant_row.name if tenant_row else None,
            prefix=display_prefix(plaintext),
            name=name,
            models=sorted(set(models)) if models is not None else None,
            is_admin=is_admin,
            created_at=time.time(),
            revoked_at=None,
            default_class=default_class,
            classes=sorted(set(classes)) if classes is not None else None,
        )
        with self._engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=info.id,
                    tenant_id=info.tenant_id,
                    key_hash=hash_key(plaintext),
                    prefix=info.prefix,
                    name=name,
                    models=_json_list(info.models),
                    is_admin=is_admin,
                    created_at=info.created_at,
                    default_class=default_class,
                    classes=_json_list(info.classes),
                )
            )
            bump(conn)
        return IssuedKey(info, plaintext)

    def list_keys(
        self, *, tenant: str | None = None, include_revoked: bool = True
    ) -> list[KeyInfo]:
        query = select(api_keys, tenants.c.name.label("tenant_name")).outerjoin(
            tenants, api_keys.c.tenant_id == tenants.c.id
        )
        if tenant is not None:
            checked(tenant, "a tenant id or name", REF_CHARS)
            query = query.where((tenants.c.id == tenant) | (tenants.c.name == tenant))
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(api_keys.c.created_at)).all()
        return [
            KeyInfo(
                id=r.id,
                tenant_id=r.tenant_id,
                tenant_name=r.tenant_name,
                prefix=r.prefix,
                name=r.name,
                models=orjson.loads(r.models) if r.models is not None else None,
                is_admin=bool(r.is_admin),
                created_at=r.created_at,
                revoked_at=r.revoked_at,
                default_class=r.default_class,
                classes=orjson.loads(r.classes) if r.classes is not None else None,
            )
            for r in rows
        ]

    def revoke_key(self, key_id: str) -> bool:
        checked(key_id, "a key id", ID_CHARS)
        with self._engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            if result.rowcount > 0:
                bump(conn)
        return result.rowcount > 0

    def has_admin_key(self) -> bool:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.id).where(api_keys.c.is_admin, api_keys.c.revoked_at.is_(None))
            ).first()
        return row is not None

    def active_principals(self) -> dict[str, Principal]:
        """key hash -> principal, for the in-memory key ring."""
        query = (
            select(api_keys, tenants.c.name.label("tenant_name"))
            .outerjoin(tenants, api_keys.c.tenant_id == tenants.c.id)
            .where(api_keys.c.revoked_at.is_(None))
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            r.key_hash: Principal(
                key_id=r.id,
                tenant_id=r.tenant_id,
                tenant_name=r.tenant_name,
                models=frozenset(orjson.loads(r.models)) if r.models is not None else None,
                is_admin=bool(r.is_admin),
                default_class=r.default_class,
                classes=frozenset(orjson.loads(r.classes)) if r.classes is not None else None,
            )
            for r in rows
        }


def _json_list(items: list[str] | None) -> str | None:
    return orjson.dumps(items).decode() if items is not None else None
