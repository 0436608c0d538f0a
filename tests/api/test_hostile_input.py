"""Requests that used to get a 500, a redirect or the wrong caller through:
admin keys on /v1, trailing slashes, uploads cut short, and values the
database cannot store (checked on SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from forebay.cli.main import app
from tests.conftest import Gateway, GatewayFactory, Upstream, echo_config


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return make_gateway(echo_config(upstream.base_url))


CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def test_the_admin_key_cannot_make_model_requests(gw: Gateway) -> None:
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    for method, path, body in [
        ("POST", "/chat/completions", CHAT),
        ("POST", "/completions", {"model": "echo", "prompt": "hi"}),
        ("POST", "/embeddings", {"model": "embed", "input": "hi"}),
        ("GET", "/models", None),
        ("GET", "/models/echo", None),
    ]:
        resp = httpx.request(method, f"{gw.base_url}{path}", json=body, headers=admin)
        assert resp.status_code == 403, (path, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "tenant_key_required" and "tenant" in error["message"]
    assert httpx.get(f"{gw.url}/admin/tenants", headers=admin).status_code == 200
    assert httpx.get(
        f"{gw.base_url}/models", headers={"authorization": f"Bearer {gw.tenant_key}"}
    ).is_success


def test_a_trailing_slash_is_a_404_not_a_redirect(gw: Gateway) -> None:
    auth = {"authorization": f"Bearer {gw.tenant_key}"}
    for method, path in [
        ("POST", "/v1/chat/completions/"),
        ("POST", "/v1/embeddings/"),
        ("GET", "/v1/models/"),
        ("GET", "/admin/tenants/"),
        ("GET", "/readyz/"),
        ("GET", "/metrics/"),
    ]:
        # The Host a redirect used to echo back comes from the client.
        headers = {**auth, "host": "evil.example"}
        resp = httpx.request(method, f"{gw.url}{path}", json=CHAT, headers=headers)
        assert resp.status_code == 404, (path, resp.status_code)
        assert "location" not in resp.headers and resp.json()["error"]["message"]


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs as errors (it does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_an_upload_cut_short_is_a_client_disconnect(
    gw: Gateway, server_errors: list[logging.LogRecord]
) -> None:
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "' + b"x" * 200
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
        f"authorization: Bearer {gw.tenant_key}\r\ncontent-type: application/json\r\n"
        f"content-length: {2 * len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.server.port)) as sock:
        sock.sendall(head + body)  # half the body, then gone
        time.sleep(0.1)
    (row,) = gw.wait_rows(1)
    assert row["status"] == 499 and row["error_type"] == "client_disconnected"
    assert not [r for r in server_errors if r.exc_info], "no traceback for a client's hang-up"


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_gw(
    request: pytest.FixtureRequest, make_gateway: GatewayFactory, upstream: Upstream
) -> Gateway:
    config = echo_config(upstream.base_url)
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        config = f'\n    database: {{url: "{url}"}}' + config
    return make_gateway(config)


UNSTORABLE: list[tuple[str, str, object, str | None]] = [
    ("POST", "/admin/tenants", {"name": "bad\x00name"}, None),
    ("POST", "/admin/tenants", {"name": "n" * 201}, None),
    ("POST", "/admin/tenants", {"name": "line\nbreak"}, None),
    ("POST", "/admin/keys", {"tenant": "default", "name": "k\x00"}, None),
    ("POST", "/admin/keys", {"tenant": "default", "name": "k" * 201}, None),
    ("POST", "/admin/keys", {"tenant": "def\x00ault"}, None),
    ("POST", "/admin/keys", {"tenant": "t" * 5000}, None),
    ("POST", "/admin/keys", {"tenant": "default", "models": ["ec\x00ho"]}, "models"),
    ("GET", "/admin/keys?tenant=a%00b", None, None),
    ("DELETE", "/admin/keys/key_%00", None, None),
    ("POST", f"/admin/keys/{'k' * 41}/revoke", None, None),
    ("PUT", "/admin/limits/tenant/de%00fault", {"rpm": 5}, None),
    ("GET", f"/admin/limits/tenant/{'t' * 201}", None, None),
    ("DELETE", "/admin/limits/key/key_%00", None, None),
    ("GET", "/admin/usage?since=nan", None, "since"),
    ("GET", "/admin/usage?since=inf", None, "since"),
    ("GET", "/admin/usage?since=-inf", None, "since"),
    ("GET", "/admin/usage?since=1e400", None, "since"),
    ("GET", "/admin/usage?since=10000000000000d", None, "since"),
    ("GET", "/admin/usage?since=-5", None, "since"),
]


def test_values_the_database_cannot_hold_get_400(any_db_gw: Gateway) -> None:
    admin = {"authorization": f"Bearer {any_db_gw.admin_key}"}
    for method, path, body, param in UNSTORABLE:
        resp = httpx.request(method, f"{any_db_gw.url}{path}", json=body, headers=admin)
        assert resp.status_code == 400, (method, path, resp.text)
        error = resp.json()["error"]
        assert error["param"] == param
        words = ("control characters", "at most", "since", "empty", "Unknown model alias 'ec?ho'")
        assert any(word in error["message"] for word in words), error["message"]
    # ...and the store is still fine, and nothing was written.
    names = httpx.get(f"{any_db_gw.url}/admin/tenants", headers=admin).json()["data"]
    assert [t["name"] for t in names] == ["default"]


def test_the_cli_refuses_the_same_values(gw: Gateway) -> None:
    runner = CliRunner()
    where = ["--data-dir", str(gw.data_dir)]
    for args in [
        ["usage", "--since", "nan"],
        ["usage", "--since", "10000000000000d"],
        ["keys", "revoke", "k" * 41],
        ["keys", "list", "--tenant", "a\x01b"],
    ]:
        result = runner.invoke(app, [*args, *where])
        assert result.exit_code == 2, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "error" in result.output
    made = runner.invoke(app, ["tenants", "create", "t" * 201, *where])
    assert made.exit_code == 1 and "at most 200" in made.output
