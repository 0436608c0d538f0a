"""`forebay serve` as a user runs it: first-start keys, keys made with the CLI,
graceful shutdown that flushes the ledger, restarts that keep keys and usage,
and no secret or prompt text in logs or the ledger."""

from __future__ import annotations

import json
import os
import pty
import re
import resource
import secrets
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Upstream
from tests.support.ledger import read_ledger
from tests.support.process import ServeProcess, forebay
from tests.support.servers import free_port

KEY_RE = re.compile(r"sk-fb-[A-Za-z0-9_-]{20,}")


@pytest.fixture
def setup(tmp_path: Path, upstream: Upstream) -> Iterator[tuple[Path, Path]]:
    config = tmp_path / "forebay.yaml"
    config.write_text(
        f"""
key_refresh_s: 0.2
ledger: {{flush_interval_s: 5}}  # long: only shutdown's flush can write the last rows
models:
  echo:
    deployments:
      - name: fake-echo
        base_url: {upstream.base_url}
        model: echo
        api_key: sk-upstream-secret-DO-NOT-LEAK
        price: {{input_per_million: 1, output_per_million: 2}}
"""
    )
    yield config, tmp_path / "data"


def _ledger(data: Path) -> list[dict[str, object]]:
    return read_ledger(f"sqlite:///{data / 'forebay.db'}")


def _chat(url: str, key: str, text: str, **extra: object) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )


def test_keys_survive_restart_and_shutdown_flushes_the_ledger(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    config, data = setup
    log = tmp_path / "serve.log"
    first = ServeProcess("--config", str(config), "--data-dir", str(data), log=log).start()
    try:
        # Output that is not a terminal goes to logs: the keys go to a file instead.
        assert not KEY_RE.findall(log.read_text()), "no key in a server's log"
        keys_file = data / "first-start-keys.txt"
        assert str(keys_file) in log.read_text()
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        saved = KEY_RE.findall(keys_file.read_text())
        assert len(saved) == 2, "first start saves the admin and the tenant key"
        admin_key, tenant_key = saved
        statuses = [_chat(first.url, tenant_key, f"hello {i}").status_code for i in range(5)]
        assert statuses == [200] * 5
        assert (
            httpx.get(
                f"{first.url}/admin/keys", headers={"authorization": f"Bearer {admin_key}"}
            ).status_code
            == 200
        )
    finally:
        code = first.terminate()
    assert code in (0, -15), log.read_text()  # uvicorn re-raises SIGTERM once it has shut down
    assert "Application shutdown complete" in log.read_text()
    # The writer's flush interval is 5 s; these rows can only come from the shutdown flush.
    assert len(_ledger(data)) == 5

    second = ServeProcess("--config", str(config), "--data-dir", str(data), log=log).start()
    try:
        assert not KEY_RE.findall(log.read_text())
        assert KEY_RE.findall(keys_file.read_text()) == saved, "keys are made on first start only"
        assert _chat(second.url, tenant_key, "again").status_code == 200
    finally:
        assert second.terminate() in (0, -15)
    rows = _ledger(data)
    assert len(rows) == 6 and len({r["request_id"] for r in rows}) == 6


def test_cli_keys_and_usage_and_no_secret_anywhere(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    config, data = setup
    env = {"FOREBAY_ADMIN_KEY": "sk-fb-admin-" + secrets.token_urlsafe(24)}
    log = tmp_path / "serve.log"
    gw = ServeProcess("--config", str(config), "--data-dir", str(data), log=log, env=env).start()
    canary_key = "sk-fb-CANARY" + secrets.token_urlsafe(24)
    canary_prompt = "PROMPT-CANARY-" + secrets.token_hex(8)
    try:
        assert KEY_RE.findall(log.read_text()) != [env["FOREBAY_ADMIN_KEY"]]
        assert env["FOREBAY_ADMIN_KEY"] not in log.read_text()

        made = forebay(
            "keys",
            "create",
            "--tenant",
            "default",
            "--models",
            "echo",
            "--config",
            str(config),
            "--data-dir",
            str(data),
        )
        assert made.returncode == 0, made.stderr
        (cli_key,) = KEY_RE.findall(made.stdout)
        key_id = re.search(r"id:\s+(\S+)", made.stdout)
        assert key_id is not None

        listed = forebay("keys", "list", "--json", "--config", str(config), "--data-dir", str(data))
        assert cli_key not in listed.stdout
        (mine,) = [k for k in json.loads(listed.stdout) if k["id"] == key_id.group(1)]
        assert mine["models"] == ["echo"] and cli_key.startswith(mine["prefix"])

        # The running gateway picks the new key up without a restart.
        resp = httpx.Response(401)
        for _ in range(100):
            resp = _chat(gw.url, cli_key, canary_prompt, api_key=canary_key)
            if resp.status_code == 200:
                break
            time.sleep(0.05)
        assert resp.status_code == 200, resp.text
        bad = _chat(gw.url, canary_key, canary_prompt)
        assert bad.status_code == 401 and canary_key not in bad.text

        revoked = forebay(
            "keys", "revoke", key_id.group(1), "--config", str(config), "--data-dir", str(data)
        )
        assert revoked.returncode == 0, revoked.stderr
        served = 1  # the revocation reaches the gateway within key_refresh_s
        for _ in range(100):
            if _chat(gw.url, cli_key, "x").status_code == 401:
                break
            served += 1
            time.sleep(0.05)
        assert _chat(gw.url, cli_key, "x").status_code == 401
    finally:
        assert gw.terminate() in (0, -15)

    args = ("--by", "model", "--since", "1h", "--config", str(config), "--data-dir", str(data))
    usage = forebay("usage", "--json", *args)
    assert usage.returncode == 0, usage.stderr
    by_model = {g["group"]: g for g in json.loads(usage.stdout)}
    # Rejected keys never reach model resolution, so only the served requests count.
    assert by_model["echo"]["requests"] == served and by_model["echo"]["errors"] == 0
    assert "echo" in forebay("usage", *args).stdout  # and the table form prints

    # Nothing a caller sent as a secret or as prompt text is stored or logged.
    stored = b"".join(p.read_bytes() for p in [log, *data.rglob("*")] if p.is_file())
    for needle in (
        canary_key,
        canary_prompt,
        cli_key,
        env["FOREBAY_ADMIN_KEY"],
        "sk-upstream-secret",
    ):
        assert needle.encode() not in stored, f"{needle[:16]}... leaked"


def test_a_busy_port_is_one_clear_line_and_exit_2(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = forebay(
            "serve", "--config", str(config), "--data-dir", str(data), "--port", str(port)
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "serving" not in result.stdout
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert f"127.0.0.1:{port}" in line and "already in use" in line and "--port" in line
    assert not data.exists(), "nothing started: no database, no keys"


def test_keys_are_shown_on_a_terminal_and_not_saved(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    config, data = setup
    port = free_port()
    leader, follower = pty.openpty()
    args = ["serve", "--config", str(config), "--data-dir", str(data), "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "forebay", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    shown = b""
    try:
        deadline = time.monotonic() + 60
        while b"serving" not in shown and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                shown += os.read(leader, 65536)
        keys = KEY_RE.findall(shown.decode(errors="replace"))
        assert len(keys) == 2, shown.decode(errors="replace")
        assert not (data / "first-start-keys.txt").exists()
        for _ in range(200):  # the tenant key works once the server is up
            try:
                if _chat(f"http://127.0.0.1:{port}", keys[1], "hi").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("the key shown on the terminal does not work")
    finally:
        proc.terminate()
        proc.wait(30)
        os.close(leader)


def test_serve_raises_the_open_file_limit(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    log = tmp_path / "serve.log"
    gw = ServeProcess("--config", str(config), "--data-dir", str(data), log=log, preexec=lower)
    gw.start()
    try:
        assert gw.proc is not None
        limits = Path(f"/proc/{gw.proc.pid}/limits").read_text()
        (line,) = [ln for ln in limits.splitlines() if ln.startswith("Max open files")]
        soft_now = int(line.split()[3])
        if hard > low:
            assert soft_now == hard and f"open-file limit raised from {low} to {hard}" in (
                log.read_text()
            )
        else:
            assert soft_now == low
    finally:
        assert gw.terminate() in (0, -15)
