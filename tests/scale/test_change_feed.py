"""Two gateways sharing one database (a SQLite file, or PostgreSQL): a key or limit
changed through one replica's admin API applies there at once and on the other
within about a second, and so does one changed by the CLI straight in the
database. Nothing is reloaded while nothing changes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream
from tests.support.process import forebay

BOUND_S = 1.5  # "within a second", with room for a loaded CI machine


def eventually(check: Callable[[], bool], what: str, timeout: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


@dataclass
class Replicas:
    a: Gateway
    b: Gateway
    cli_args: tuple[str, ...]

    def cli(self, *args: str) -> str:
        result = forebay(*args, *self.cli_args)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    def admin(self, gw: Gateway, method: str, path: str, **kw: object) -> httpx.Response:
        headers = {"authorization": f"Bearer {gw.admin_key}"}
        return httpx.request(method, f"{gw.url}{path}", headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def _accepts(gw: Gateway, key: str) -> bool:
    resp = httpx.get(f"{gw.base_url}/models", headers={"authorization": f"Bearer {key}"})
    assert resp.status_code in (200, 401), resp.text
    return resp.status_code == 200


def _policy(gw: Gateway) -> dict[str, object] | None:
    headers = {"authorization": f"Bearer {gw.admin_key}"}
    resp = httpx.get(f"{gw.url}/admin/limits/tenant/default", headers=headers)
    return resp.json()["policy"] if resp.status_code == 200 else None  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "postgres"])
def replicas(
    request: pytest.FixtureRequest,
    make_gateway: GatewayFactory,
    upstream: Upstream,
    tmp_path: Path,
) -> Replicas:
    database = ""
    if request.param == "postgres":
        database = f'database: {{url: "{request.getfixturevalue("postgres_url")}"}}\n'
    # key_refresh_s left at its default: the poll interval that ships.
    config = (
        database
        + f"""
models:
  echo:
    deployments:
      - {{name: fake, base_url: "{upstream.base_url}", model: echo}}
"""
    )
    data = tmp_path / "shared"
    a = make_gateway(config, data_dir=data)
    b = make_gateway(config, data_dir=data)
    path = tmp_path / "cli.yaml"
    path.write_text(config)
    return Replicas(a, b, ("--config", str(path), "--data-dir", str(data)))


def test_keys_and_limits_apply_on_every_replica_within_a_second(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b

    # Through replica a's admin API: at once on a, within the bound on b.
    made = replicas.admin(a, "POST", "/admin/keys", json={"tenant": "default"}).json()
    assert _accepts(a, made["key"])
    eventually(lambda: _accepts(b, made["key"]), "b accepts a key made on a")
    assert replicas.admin(a, "POST", f"/admin/keys/{made['id']}/revoke").status_code == 200
    assert not _accepts(a, made["key"])
    eventually(lambda: not _accepts(b, made["key"]), "b refuses a key revoked on a")

    # Through the CLI, straight in the database: within the bound on both.
    out = replicas.cli("keys", "create", "--tenant", "default")
    (key,) = set(re.findall(r"sk-fb-[A-Za-z0-9_-]{20,}", out))
    (key_id,) = set(re.findall(r"key_[0-9a-f]{16}", out))
    eventually(lambda: _accepts(a, key) and _accepts(b, key), "both accept a key the CLI made")
    replicas.cli("keys", "revoke", key_id)
    eventually(
        lambda: not _accepts(a, key) and not _accepts(b, key), "both refuse a key the CLI revoked"
    )
    replicas.cli("limits", "set", "--tenant", "default", "--rpm", "7")
    eventually(lambda: _policy(a) == _policy(b) == {"rpm": 7}, "both hold the limit the CLI set")

    # Idle: the poll reads one row, and nothing is reloaded.
    reloads = (a.services.full_refreshes, b.services.full_refreshes)
    time.sleep(4 * a.services.settings.key_refresh_s)
    assert (a.services.full_refreshes, b.services.full_refreshes) == reloads
