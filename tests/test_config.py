"""`forebay config check` and the config loader: errors name the field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from forebay.config.load import load_for_command, load_settings
from forebay.errors import ConfigError
from tests.support.process import forebay

GOOD = """\
models:
  chat:
    deployments:
      - name: remote
        base_url: http://127.0.0.1:9/v1
        model: m
        api_key: ${UPSTREAM_KEY}
        price: {input_per_million: 0.5, output_per_million: 1.5}
        energy: {joules_per_input_token: 0.1, joules_per_output_token: 0.4}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forebay.yaml"
    path.write_text(text)
    return path


def test_good_file_resolves_env_and_hashes_its_text(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, GOOD), environ={"UPSTREAM_KEY": "sk-x"})
    (dep,) = settings.models["chat"].deployments
    assert dep.api_key == "sk-x" and dep.upstream_model == "m"
    again = load_settings(_write(tmp_path, GOOD + "\n# comment\n"), environ={"UPSTREAM_KEY": "y"})
    assert len(settings.revision) == 12 and again.revision != settings.revision


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (GOOD.replace("        model: m\n", "        model: m\n        modle: typo\n"), 7, "modle"),
        (
            GOOD.replace("output_per_million: 1.5", "output_per_million: cheap"),
            8,
            "output_per_million",
        ),
        (GOOD.replace("${UPSTREAM_KEY}", "${NOT_SET_ANYWHERE}"), 7, "NOT_SET_ANYWHERE"),
        (
            GOOD.replace("    deployments:\n", "    deployments: []\n").split("      - name")[0],
            3,
            "deployments",
        ),
    ],
)
def test_errors_name_field_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={"UPSTREAM_KEY": "k"})
    message = str(raised.value)
    assert f"{path}:{line}" in message and fragment in message


def test_config_check_command(tmp_path: Path) -> None:
    ok = forebay("config", "check", str(_write(tmp_path, GOOD)), env={"UPSTREAM_KEY": "k"})
    assert ok.returncode == 0 and "1 models, 1 deployments" in ok.stdout
    bad_file = _write(tmp_path, GOOD.replace("model: m", "model: [m]"))
    bad = forebay("config", "check", str(bad_file), env={"UPSTREAM_KEY": "k"})
    assert bad.returncode == 2
    assert "forebay.yaml:6" in bad.stderr and "model" in bad.stderr


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[1] / "forebay.example.yaml"
    settings = load_settings(
        example, environ={"OPENAI_API_KEY": "sk-x", "VLLM_URL": "http://127.0.0.1:8000/v1"}
    )
    assert "local" in settings.models


def test_shipped_example_passes_config_check_on_a_fresh_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = Path(__file__).parents[1] / "forebay.example.yaml"
    for name in ("OPENAI_API_KEY", "VLLM_URL"):
        monkeypatch.delenv(name, raising=False)
    checked = forebay("config", "check", str(example))
    assert checked.returncode == 0, checked.stderr
    assert "models served: local (local-smollm2); local-embed (local-minilm)" in checked.stdout
    assert (
        "'openai-mini'" in checked.stderr and "OPENAI_API_KEY is empty or not set" in checked.stderr
    )
    settings = load_settings(example, environ={})
    (openai_dep,) = [d for d in settings.models["llama-8b"].deployments if d.name == "openai-mini"]
    assert openai_dep.api_key is None


def test_data_dir_and_config_resolve_in_one_order(tmp_path: Path) -> None:
    config = _write(tmp_path, "data_dir: from-file\n")
    other = tmp_path / "elsewhere.yaml"
    other.write_text("key_refresh_s: 1\n")
    env = {"FOREBAY_DATA_DIR": str(tmp_path / "from-env"), "FOREBAY_CONFIG": str(other)}

    def chosen(flag_config: Path | None, flag_dir: Path | None, environ: dict[str, str]) -> tuple:
        s = load_for_command(flag_config, flag_dir, environ=environ)
        return s.source, s.config_origin, s.data_dir, s.data_dir_origin

    flag = tmp_path / "from-flag"
    assert chosen(config, flag, env) == (str(config), "from --config", flag, "--data-dir")
    assert chosen(config, None, env)[2:] == (tmp_path / "from-env", "FOREBAY_DATA_DIR")
    # The file's data_dir is relative to the file, not to where the command runs.
    assert chosen(config, None, {})[2:] == (tmp_path / "from-file", f"data_dir in {config}")
    assert chosen(None, None, env)[:2] == (str(other), "from FOREBAY_CONFIG")
    home = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    source, origin, data_dir, dir_origin = chosen(None, None, home)
    assert source == "<built-in default>" and origin == "no --config or FOREBAY_CONFIG"
    assert data_dir == tmp_path / "xdg" / "forebay" and dir_origin.startswith("the default")


def test_a_models_block_says_it_replaces_the_local_models(tmp_path: Path) -> None:
    env = {"UPSTREAM_KEY": "k"}
    replaced = load_settings(_write(tmp_path, GOOD), environ=env)
    assert set(replaced.models) == {"chat"}
    assert any("include_local_models: true" in n for n in replaced.notices)
    kept = load_settings(_write(tmp_path, "include_local_models: true\n" + GOOD), environ=env)
    assert set(kept.models) == {"chat", "local", "local-embed"} and kept.notices == ()
    checked = forebay("config", "check", str(_write(tmp_path, GOOD)), env=env)
    assert "models served: chat (remote)" in checked.stdout
    assert "built-in local models (local, local-embed) are not served" in checked.stderr


def test_local_deployments_are_limited_to_their_workers_slots(tmp_path: Path) -> None:
    text = """\
local: {parallel: 3, embed_parallel: 1, port: 18555}
models:
  local:
    deployments:
      - {name: a, provider: local, model: smollm2-135m-instruct, max_concurrency: 64}
  local-embed:
    kind: embedding
    deployments:
      - {name: e, provider: local, model: all-minilm-l6-v2}
"""
    settings = load_settings(_write(tmp_path, text), environ={})
    limits = {d.name: d.max_concurrency for m in settings.models.values() for d in m.deployments}
    assert limits == {"a": 3, "e": 1}
    assert settings.local.port == 18555
    two = text.replace(
        "max_concurrency: 64}",
        "max_concurrency: 64}\n      - {name: b, provider: local, model: smollm2-135m-instruct}",
    )
    with pytest.raises(ConfigError, match="a, b would all listen on port 18555"):
        load_settings(_write(tmp_path, two), environ={})


def test_responses_retention_is_read_and_checked(tmp_path: Path) -> None:
    text = GOOD + "responses:\n  retention_days: 7\n  max_chain: 50\n"
    settings = load_settings(_write(tmp_path, text), environ={"UPSTREAM_KEY": "k"})
    assert (settings.responses.retention_days, settings.responses.max_chain) == (7, 50)
    for bad in ("  retention_days: 0\n", "  retention_dayz: 7\n"):
        with pytest.raises(ConfigError, match="retention_day"):
            load_settings(
                _write(tmp_path, GOOD + "responses:\n" + bad), environ={"UPSTREAM_KEY": "k"}
            )
