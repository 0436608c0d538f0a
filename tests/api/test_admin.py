"""The admin API: tenants and keys, admin key required, keys shown once."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(echo_config(upstream.base_url))


def _chat(gw: Gateway, key: str) -> int:
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    return resp.status_code


def test_admin_routes_need_the_admin_key(gw: Gateway) -> None:
    for headers, status in [({}, 401), ({"authorization": f"Bearer {gw.tenant_key}"}, 403)]:
        resp = httpx.get(f"{gw.url}/admin/tenants", headers=headers)
        assert resp.status_code == status
        assert resp.json()["error"]["message"]


def test_tenant_and_key_lifecycle(gw: Gateway, admin: httpx.Client) -> None:
    tenant = admin.post("/admin/tenants", json={"name": "acme"})
    assert tenant.status_code == 201, tenant.text
    assert admin.post("/admin/tenants", json={"name": "acme"}).status_code == 400  # duplicate
    names = {t["name"] for t in admin.get("/admin/tenants").json()["data"]}
    assert names == {"default", "acme"}

    made = admin.post("/admin/keys", json={"tenant": "acme", "name": "ci"})
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    assert key.startswith("sk-fb-") and made.json()["tenant_id"] == tenant.json()["id"]
    assert _chat(gw, key) == 200  # usable at once: creating a key refreshes the key ring

    listed = admin.get("/admin/keys", params={"tenant": "acme"})
    assert [k["id"] for k in listed.json()["data"]] == [key_id]
    assert key not in listed.text, "a key is shown once, at creation"

    assert admin.post(f"/admin/keys/{key_id}/revoke").status_code == 200
    assert _chat(gw, key) == 401
    assert admin.delete(f"/admin/keys/{key_id}").status_code == 404  # already revoked
    assert _chat(gw, gw.tenant_key) == 200  # other keys unaffected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "tenant"),
        ({"tenant": "default", "models": "echo"}, "models"),
        ({"tenant": "nobody"}, None),
    ],
)
def test_bad_key_requests_say_what_to_fix(
    admin: httpx.Client, body: dict[str, object], param: str | None
) -> None:
    resp = admin.post("/admin/keys", json=body)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["param"] == param and len(err["message"]) > 10
