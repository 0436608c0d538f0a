"""`forebay keys create` and `forebay limits set`: what is accepted is what was
meant. A key's classes and models are checked against the config (the same
check as the admin API's), and `limits set` changes only the limits it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forebay.app import prepare
from forebay.cli.main import app
from forebay.config.load import load_settings

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with a store in it (as `serve` leaves it), chosen by the env variable."""
    data = tmp_path / "data"
    prepare(load_settings(None, data_dir=data), env_admin_key="sk-fb-admin-for-cli-tests")
    monkeypatch.delenv("FOREBAY_CONFIG", raising=False)
    monkeypatch.setenv("FOREBAY_DATA_DIR", str(data))
    return data


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--classes", "batch", "--default-class", "interactive"], "'interactive' is not among"),
        (["--classes", "batch"], "(the gateway's admission.default_class) is not among"),
        (["--classes", "vip"], "Unknown class 'vip'"),
        (["--default-class", "vip"], "Unknown default class 'vip'"),
        (["--models", "local,gpt-5"], "Unknown model alias 'gpt-5' in models"),
    ],
)
def test_keys_create_refuses_a_scope_that_cannot_work(
    store: Path, args: list[str], fragment: str
) -> None:
    code, out, err = _run("keys", "create", "--tenant", "default", *args)
    assert code == 2 and "sk-fb-" not in out
    assert fragment in err
    if "--models" in args:  # the known aliases come from the resolved config
        assert "'local', 'local-embed'" in err


def test_keys_create_accepts_a_consistent_scope(store: Path) -> None:
    code, out, err = _run(
        "keys", "create", "--tenant", "default", "--models", "local",
        "--classes", "batch,realtime", "--default-class", "batch",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = _run("keys", "list", "--json")
    (made,) = [k for k in json.loads(out) if k["models"] == ["local"]]
    assert made["classes"] == ["batch", "realtime"] and made["default_class"] == "batch"


def _policy() -> dict[str, object]:
    code, out, err = _run("limits", "show", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    return row["policy"]  # type: ignore[no-any-return]


def test_limits_set_changes_only_what_it_names(store: Path) -> None:
    tenant = ("limits", "set", "--tenant", "default")
    assert _run(*tenant, "--rpm", "600", "--tpm", "1000", "--usd-per-day", "50/40")[0] == 0
    assert _run(*tenant, "--concurrent", "3")[0] == 0
    assert _policy() == {
        "rpm": 600,
        "tpm": 1000,
        "concurrent": 3,
        "usd_per_day": {"hard": 50.0, "soft": 40.0},
    }
    # A budget given is set as given: HARD alone drops the old SOFT.
    assert _run(*tenant, "--usd-per-day", "60", "--unset", "tpm")[0] == 0
    assert _policy() == {"rpm": 600, "concurrent": 3, "usd_per_day": {"hard": 60.0}}
    assert _run(*tenant, "--unset", "rpm,usd-per-day")[0] == 0
    assert _policy() == {"concurrent": 3}
    assert _run(*tenant, "--replace", "--tpm", "5")[0] == 0
    assert _policy() == {"tpm": 5}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "nothing to change"),
        (["--unset", "rpn"], "unknown limit 'rpn'"),
        (["--rpm", "5", "--unset", "rpm"], "--rpm is both given and unset"),
        (["--usd-per-day", "10/20"], "'soft' must not be above 'hard'"),
    ],
)
def test_limits_set_refuses_what_it_cannot_do(store: Path, args: list[str], fragment: str) -> None:
    code, _, err = _run("limits", "set", "--tenant", "default", *args)
    assert code == 2 and fragment in err
