"""Every command finds the store the same way (--data-dir, FOREBAY_DATA_DIR, the
config's data_dir, the default). The first-hour trap: `serve --data-dir X` then
a CLI command without it must not write a fresh database elsewhere and hand out
a key the server has never heard of."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Upstream
from tests.support.process import ServeProcess, forebay

KEY_RE = re.compile(r"sk-fb-[A-Za-z0-9_-]{20,}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own: the default data dir and the serve notes go there."""
    for name in ("FOREBAY_DATA_DIR", "FOREBAY_CONFIG", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def config(tmp_path: Path, upstream: Upstream) -> Path:
    path = tmp_path / "forebay.yaml"
    path.write_text(
        f"""
key_refresh_s: 0.2
models:
  echo:
    deployments:
      - name: fake-echo
        base_url: {upstream.base_url}
        model: echo
      - name: keyless
        base_url: {upstream.base_url}
        model: echo
        api_key: ${{FOREBAY_TEST_UNSET_KEY:-}}
"""
    )
    return path


@pytest.fixture
def served(tmp_path: Path, home: Path, config: Path) -> Iterator[tuple[ServeProcess, Path]]:
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    gw = ServeProcess("--config", str(config), "--data-dir", str(data), log=log).start()
    yield gw, data
    gw.kill()


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


def test_the_readme_trap_fails_loudly_and_the_same_flag_or_env_works(
    served: tuple[ServeProcess, Path], home: Path, config: Path
) -> None:
    gw, data = served
    log = gw.log.read_text()
    assert f"data   {data} (from --data-dir)" in log
    assert f"config {config} (--config)" in log
    assert "models served: echo (fake-echo, keyless)" in log
    # The deployment whose key variable is unset is named, and so are the dropped local models.
    assert "'keyless'" in log and "FOREBAY_TEST_UNSET_KEY is empty or not set" in log
    assert "include_local_models: true" in log

    default_dir = home / ".local" / "share" / "forebay"
    for args in (["tenants", "create", "acme"], ["keys", "list"]):
        lost = forebay(*args, "--config", str(config))
        assert lost.returncode == 1, lost.stdout
        # It names where it looked and why, and where the server is.
        assert f"no Forebay store at {default_dir / 'forebay.db'}" in lost.stderr
        assert "(from the default: no --data-dir, FOREBAY_DATA_DIR" in lost.stderr
        assert f"started with data dir {data} (from --data-dir; running, pid" in lost.stderr
        assert f"--data-dir {data}" in lost.stderr and f"FOREBAY_DATA_DIR={data}" in lost.stderr
        assert not default_dir.exists(), "a fresh database was created in the wrong place"

    made = forebay("tenants", "create", "acme", "--config", str(config), "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    with_flag = forebay(
        "keys", "create", "--tenant", "acme", "--config", str(config), "--data-dir", str(data)
    )
    assert with_flag.returncode == 0, with_flag.stderr
    (key,) = KEY_RE.findall(with_flag.stdout)
    assert _accepted(gw.url, key)

    via_env = forebay(
        "keys",
        "create",
        "--tenant",
        "acme",
        env={"FOREBAY_DATA_DIR": str(data), "FOREBAY_CONFIG": str(config)},
    )
    assert via_env.returncode == 0, via_env.stderr
    (env_key,) = KEY_RE.findall(via_env.stdout)
    assert _accepted(gw.url, env_key)


def test_commands_against_an_empty_store_say_so(
    served: tuple[ServeProcess, Path], config: Path
) -> None:
    _, data = served
    where = str(data / "forebay.db")
    args = ("--config", str(config), "--data-dir", str(data))
    limits = forebay("limits", "show", *args)
    assert limits.returncode == 0 and f"no limits are set in {where}" in limits.stderr
    usage = forebay("usage", "--json", *args)
    assert usage.returncode == 0 and json.loads(usage.stdout) == []
    assert "no usage recorded since" in usage.stderr and where in usage.stderr
    keys = forebay("keys", "list", "--tenant", "nobody", *args)
    assert keys.returncode == 0 and f"no keys of tenant 'nobody' in {where}" in keys.stderr


def test_keys_list_never_cuts_an_id_on_a_narrow_terminal(
    served: tuple[ServeProcess, Path], config: Path
) -> None:
    _, data = served
    args = ("--config", str(config), "--data-dir", str(data))
    for _ in range(2):
        assert forebay("keys", "create", "--tenant", "default", "--models", "echo", *args).stdout
    ids = [k["id"] for k in json.loads(forebay("keys", "list", "--json", *args).stdout)]
    assert len(ids) == 4  # admin, bootstrap tenant key, two made here
    table = forebay("keys", "list", *args, env={"COLUMNS": "60"})
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 60
    printed = re.findall(r"key_[0-9a-f]+", table.stdout)
    assert sorted(printed) == sorted(ids), f"ids cut short:\n{table.stdout}"
    revoked = forebay("keys", "revoke", printed[-1], *args)  # pasted as printed
    assert revoked.returncode == 0, revoked.stderr


def test_an_empty_postgres_database_is_not_silently_migrated(
    tmp_path: Path, home: Path, postgres_url: str
) -> None:
    config = tmp_path / "pg.yaml"
    config.write_text(f'database: {{url: "{postgres_url}"}}\n')
    listed = forebay("tenants", "list", "--config", str(config))
    assert listed.returncode == 1
    assert "no Forebay store at" in listed.stderr and "database.url in" in listed.stderr
    from sqlalchemy import create_engine, inspect

    engine = create_engine(postgres_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
