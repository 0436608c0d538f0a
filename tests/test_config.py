"""`forebay config check` and the config loader: errors name the field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from forebay.config.load import load_settings
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
