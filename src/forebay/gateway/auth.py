"""Stage 1: who is calling. A dict lookup of the key's hash; no database here.

Every authenticated route (/v1/*, /admin/*) goes through `authenticate`, so a
failure is counted and throttled the same way everywhere (`auth_failures.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request

from forebay.errors import ForebayError, unauthorized
from forebay.gateway.auth_failures import FailedAuth
from forebay.gateway.request_headers import request_headers
from forebay.tenancy.keys import Principal, hash_key

ENV_ADMIN = Principal(
    key_id="env-admin", tenant_id=None, tenant_name=None, models=None, is_admin=True
)


class KeyRing:
    """Active keys by hash, swapped whole on refresh so readers never see half a table."""

    def __init__(
        self, env_admin_key: str | None = None, failures: FailedAuth | None = None
    ) -> None:
        self._by_hash: Mapping[str, Principal] = {}
        self._env_admin_hash = hash_key(env_admin_key) if env_admin_key else None
        self.failures = failures or FailedAuth()

    def replace(self, by_hash: Mapping[str, Principal]) -> None:
        self._by_hash = by_hash

    def __len__(self) -> int:
        return len(self._by_hash)

    def principals(self) -> list[Principal]:
        return list(self._by_hash.values())

    def lookup(self, key: str) -> Principal | None:
        digest = hash_key(key)
        if digest == self._env_admin_hash:
            return ENV_ADMIN
        return self._by_hash.get(digest)


def bearer_key(authorization: str | None, api_key_header: str | None) -> str | None:
    """The key from `Authorization: Bearer …` (OpenAI), or a key header
    (`x-api-key` as Anthropic's clients send it, `api-key` as Azure's do)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    if api_key_header:
        return api_key_header.strip() or None
    return None


def authenticate(ring: KeyRing, request: Request) -> Principal:
    failures = ring.failures
    if failures.blocked:  # empty unless someone is being throttled
        failures.check(source_of(request))
    seen = request_headers(request)
    authorization = seen.authorization
    key_header = None
    if not authorization:  # Anthropic's clients send x-api-key, Azure's api-key
        key_header = seen.x_api_key or seen.api_key
    key = bearer_key(authorization, key_header)
    if key is None:
        if authorization:
            failures.failed(source_of(request), "malformed")
            raise unauthorized("The Authorization header must be 'Bearer <your Forebay API key>'.")
        failures.failed(source_of(request), "missing")
        raise unauthorized(
            "No API key provided. Send it as 'Authorization: Bearer <key>'; "
            "ask your Forebay admin for a key."
        )
    principal = ring.lookup(key)
    if principal is None:
        failures.failed(source_of(request), "invalid")
        raise unauthorized(
            "Invalid or revoked API key. Check that you copied the whole key, "
            "or ask your Forebay admin for a new one."
        )
    return principal


def source_of(request: Request) -> str:
    """The TCP peer's address (behind a proxy: the proxy's)."""
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


def authenticate_tenant(ring: KeyRing, request: Request) -> Principal:
    """A caller of /v1: a tenant's key. An admin key has no tenant, limits or
    budget, so it must not spend on anyone's behalf."""
    principal = authenticate(ring, request)
    if principal.is_admin or principal.tenant_id is None:
        raise ForebayError(
            403,
            "Admin keys manage Forebay (/admin/...); they cannot make model requests. "
            "Use a tenant's key: create one with `forebay keys create --tenant <name>` "
            "or POST /admin/keys.",
            type="permission_error",
            code="tenant_key_required",
        )
    return principal


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ForebayError(
            403,
            "This endpoint needs an admin key; tenant keys cannot manage tenancy.",
            type="permission_error",
            code="admin_required",
        )
