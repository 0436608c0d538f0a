"""Every command finds the store the same way (--data-dir, FOREBAY_DATA_DIR, the
config's data_dir, the default). The first-hour trap: `serve --data-dir X` then
a CLI command without it must not write a fresh database elsewhere and hand out
a key the server has never heard of."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from forebay.cli.main import app
from tests.support.openai_server import FakeUpstream
from tests.support.process import ServeProcess, forebay
from tests.support.servers import ServerThread

KEY_RE = re.compile(r"sk-fb-[A-Za-z0-9_-]{20,}")


@dataclass
class Served:
    gw: ServeProcess
    data: Path
    config: Path
    home: Path
    env: dict[str, str]  # a user's environment: own HOME, no FOREBAY_* variables


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `forebay serve --data-dir X` for the module, in a home of its own."""
    tmp = tmp_path_factory.mktemp("datadir")
    home = tmp / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_DATA_HOME": "",
        "FOREBAY_DATA_DIR": "",
        "FOREBAY_CONFIG": "",
    }
    fake = FakeUpstream()
    with ServerThread(fake.app()) as upstream:
        config = tmp / "forebay.yaml"
        config.write_text(
            f"""
key_refresh_s: 0.2
models:
  echo:
    deployments:
      - name: fake-echo
        base_url: {upstream.url}/v1
        model: echo
      - name: keyless
        base_url: {upstream.url}/v1
        model: echo
        api_key: ${{FOREBAY_TEST_UNSET_KEY:-}}
"""
        )
        data = tmp / "data"
        args = ("--config", str(config), "--data-dir", str(data))
        gw = ServeProcess(*args, log=tmp / "serve.log", env=env).start()
        try:
            yield Served(gw, data, config, home, env)
        finally:
            gw.kill()


def _cli(served: Served, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return forebay(*args, env={**served.env, **env})


def _accepted(url: str, key: str) -> bool:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(100):  # the server picks new keys up within key_refresh_s
        resp = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )
        if resp.status_code == 200:
            return True
        assert resp.status_code == 401, resp.text
        time.sleep(0.05)
    return False


def test_commands_against_an_empty_store_say_so(served: Served) -> None:
    # First in the module: the store is as the first start left it. In-process (the
    # same commands, without a subprocess's start-up each).
    where = str(served.data / "forebay.db")
    args = ["--config", str(served.config), "--data-dir", str(served.data)]
    runner = CliRunner()
    limits = runner.invoke(app, ["limits", "show", *args], env=served.env)
    assert limits.exit_code == 0 and f"no limits are set in {where}" in limits.stderr
    usage = runner.invoke(app, ["usage", "--json", *args], env=served.env)
    assert usage.exit_code == 0 and json.loads(usage.stdout) == []
    assert "no usage recorded since" in usage.stderr and where in usage.stderr
    keys = runner.invoke(app, ["keys", "list", "--tenant", "nobody", *args], env=served.env)
    assert keys.exit_code == 0 and f"no keys of tenant 'nobody' in {where}" in keys.stderr


def test_the_readme_trap_fails_loudly_and_the_same_flag_or_env_works(served: Served) -> None:
    data, config = served.data, served.config
    log = served.gw.log.read_text()
    assert f"data   {data} (from --data-dir)" in log
    assert f"config {config} (from --config)" in log
    assert "models served: echo (fake-echo, keyless)" in log
    # The deployment whose key variable is unset is named, and so are the dropped local models.
    assert "'keyless'" in log and "FOREBAY_TEST_UNSET_KEY is empty or not set" in log
    assert "include_local_models: true" in log

    default_dir = served.home / ".local" / "share" / "forebay"
    for args in (["tenants", "create", "acme"], ["keys", "list"]):
        lost = _cli(served, *args, "--config", str(config))
        assert lost.returncode == 1, lost.stdout
        # It names where it looked and why, and where the server is.
        assert f"no Forebay store at {default_dir / 'forebay.db'}" in lost.stderr
        assert "(from the default: no --data-dir, FOREBAY_DATA_DIR" in lost.stderr
        assert f"started with data dir {data} (from --data-dir; running, pid" in lost.stderr
        assert f"--data-dir {data}" in lost.stderr and f"FOREBAY_DATA_DIR={data}" in lost.stderr
        assert not default_dir.exists(), "a fresh database was created in the wrong place"

    made = _cli(
        served, "tenants", "create", "acme", "--config", str(config), "--data-dir", str(data)
    )
    assert made.returncode == 0, made.stderr
    with_flag = _cli(
        served,
        "keys",
        "create",
        "--tenant",
        "acme",
        "--config",
        str(config),
        "--data-dir",
        str(data),
    )
    assert with_flag.returncode == 0, with_flag.stderr
    (key,) = KEY_RE.findall(with_flag.stdout)
    assert _accepted(served.gw.url, key)

    via_env = _cli(
        served,
        "keys",
        "create",
        "--tenant",
        "acme",
        FOREBAY_DATA_DIR=str(data),
        FOREBAY_CONFIG=str(config),
    )
    assert via_env.returncode == 0, via_env.stderr
    (env_key,) = KEY_RE.findall(via_env.stdout)
    assert _accepted(served.gw.url, env_key)


def test_keys_list_never_cuts_an_id_on_a_narrow_terminal(served: Served) -> None:
    args = ("--config", str(served.config), "--data-dir", str(served.data))
    ids = [k["id"] for k in json.loads(_cli(served, "keys", "list", "--json", *args).stdout)]
    assert len(ids) >= 2  # the admin key and the first tenant key, at least
    table = _cli(served, "keys", "list", *args, COLUMNS="60")
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 60
    printed = re.findall(r"key_[0-9a-f]+", table.stdout)
    assert sorted(printed) == sorted(ids), f"ids cut short:\n{table.stdout}"
    revoked = _cli(served, "keys", "revoke", printed[-1], *args)  # pasted as printed
    assert revoked.returncode == 0, revoked.stderr


def test_an_empty_postgres_database_is_not_silently_migrated(
    served: Served, tmp_path: Path, postgres_url: str
) -> None:
    config = tmp_path / "pg.yaml"
    config.write_text(f'database: {{url: "{postgres_url}"}}\n')
    listed = _cli(served, "tenants", "list", "--config", str(config))
    assert listed.returncode == 1
    assert "no Forebay store at" in listed.stderr and "database.url in" in listed.stderr
    engine = create_engine(postgres_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
