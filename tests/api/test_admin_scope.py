"""The admin API refuses key scopes that cannot work (the same check as the
CLI's) and updates limits in part with PATCH, in whole with PUT."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(echo_config(upstream.base_url))


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"models": ["echo", "gpt-5"]}, "models", "'echo', 'embed', 'nousage'"),
        ({"classes": ["batch"]}, "default_class", "admission.default_class"),
        ({"classes": ["batch"], "default_class": "realtime"}, "default_class", "not among"),
        ({"default_class": "vip"}, "default_class", "Unknown default class"),
        ({"classes": "batch"}, "classes", "must be a list"),
    ],
)
def test_key_scope_that_cannot_work_is_400(
    admin: httpx.Client, body: dict[str, object], param: str, fragment: str
) -> None:
    resp = admin.post("/admin/keys", json={"tenant": "default", **body})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and fragment in error["message"]
    keys = admin.get("/admin/keys").json()["data"]
    assert len(keys) == 1, "nothing was created"  # the bootstrap tenant key only


def test_key_with_a_consistent_scope_is_made(admin: httpx.Client) -> None:
    body = {"tenant": "default", "models": ["echo"], "classes": ["batch"], "default_class": "batch"}
    resp = admin.post("/admin/keys", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["classes"] == ["batch"] and resp.json()["models"] == ["echo"]


def test_patch_changes_only_what_it_names_and_put_replaces(admin: httpx.Client) -> None:
    url = "/admin/limits/tenant/default"
    put = admin.put(url, json={"rpm": 600, "tpm": 1000, "usd_per_day": {"hard": 5, "soft": 4}})
    assert put.status_code == 200, put.text
    patched = admin.patch(url, json={"tpm": None, "concurrent": 2, "usd_per_day": {"hard": 8}})
    assert patched.status_code == 200, patched.text
    want = {"rpm": 600, "concurrent": 2, "usd_per_day": {"hard": 8.0, "soft": 4.0}}
    assert patched.json()["policy"] == want
    assert admin.get(url).json()["policy"] == want  # applied at once on this replica
    bad = admin.patch(url, json={"usd_per_day": {"soft": 9}})
    assert bad.status_code == 400 and "soft" in bad.json()["error"]["message"]
    assert admin.patch(url, json={"rpn": 1}).json()["error"]["param"] == "rpn"
    assert admin.get(url).json()["policy"] == want, "a refused patch changes nothing"
    assert admin.put(url, json={"tpm": 7}).json()["policy"] == {"tpm": 7}
