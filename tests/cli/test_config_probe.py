"""`forebay config check --probe`, run as a user runs it, against loopback
upstreams: it says per deployment what is wrong, exits non-zero when any
deployment fails, and contacts nothing without --probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Upstream
from tests.support.anthropic_server import API_KEY as ANTHROPIC_KEY
from tests.support.anthropic_server import AnthropicServer
from tests.support.azure_openai_server import API_KEY as AZURE_KEY
from tests.support.azure_openai_server import AzureServer
from tests.support.openai_api_server import API_KEY as OPENAI_KEY
from tests.support.openai_api_server import OpenAIServer
from tests.support.process import forebay
from tests.support.raw_upstream import RawUpstream
from tests.support.servers import ServerThread, free_port

WRONG_KEY = "sk-wrong-key-0123456789abcdef"


@pytest.fixture
def raw() -> Iterator[RawUpstream]:
    with RawUpstream(require_key="sk-the-right-one-0123456789") as server:
        yield server


def _config(tmp_path: Path, deployments: dict[str, str]) -> Path:
    lines = ["models:", "  m:", "    deployments:"]
    for name, spec in deployments.items():
        lines.append(f"      - {{name: {name}, {spec}}}")
    path = tmp_path / "forebay.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _lines(stdout: str) -> dict[str, str]:
    """deployment name -> its line of the probe's report."""
    found = {}
    for line in stdout.splitlines():
        words = line.split()
        for word in words:
            if word.startswith("dep-"):
                found[word] = line
    return found


def test_probe_says_what_is_wrong_with_each_deployment(
    tmp_path: Path, upstream: Upstream, raw: RawUpstream
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    tls = upstream.base_url.replace("http://", "https://")  # TLS to a plain-HTTP server
    config = _config(
        tmp_path,
        {
            "dep-ok": f"base_url: '{upstream.base_url}', model: echo",
            "dep-model": f"base_url: '{upstream.base_url}', model: gpt-9",
            "dep-nov1": f"base_url: '{upstream.server.url}', model: echo",
            "dep-key": f"base_url: '{raw.base_url}', model: ok, api_key: {WRONG_KEY}",
            "dep-dead": f"base_url: '{dead}', model: echo",
            "dep-dns": "base_url: 'http://no-such-host.invalid/v1', model: echo",
            "dep-tls": f"base_url: '{tls}', model: echo",
            "dep-local": "provider: local, model: smollm2-135m-instruct",
        },
    )
    result = forebay("config", "check", str(config), "--probe", "--timeout", "5")
    assert result.returncode == 1, result.stdout + result.stderr
    got = _lines(result.stdout)
    assert got["dep-ok"].split()[0] == "ok" and "serves 'echo'" in got["dep-ok"]
    assert "FAIL model not served" in got["dep-model"] and "echo" in got["dep-model"]
    assert "FAIL wrong base_url" in got["dep-nov1"] and "/v1" in got["dep-nov1"]
    assert "FAIL bad key" in got["dep-key"] and "HTTP 401" in got["dep-key"]
    assert "FAIL unreachable" in got["dep-dead"]
    assert "FAIL DNS" in got["dep-dns"]
    assert "FAIL TLS" in got["dep-tls"]
    assert got["dep-local"].split()[0] == "skipped"
    assert "6 of 7 deployments failed" in result.stdout
    assert WRONG_KEY not in result.stdout + result.stderr  # the 401 echoed it
    assert "[redacted]" in got["dep-key"]


def test_probe_passes_when_every_deployment_answers(tmp_path: Path, upstream: Upstream) -> None:
    config = _config(tmp_path, {"dep-ok": f"base_url: '{upstream.base_url}', model: echo"})
    result = forebay("config", "check", str(config), "--probe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _lines(result.stdout)["dep-ok"].split()[0] == "ok"


def test_without_probe_nothing_is_contacted(tmp_path: Path, raw: RawUpstream) -> None:
    config = _config(tmp_path, {"dep-key": f"base_url: '{raw.base_url}', model: ok"})
    result = forebay("config", "check", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert raw.seen == []


def test_probe_tries_each_provider_through_its_own_adapter(tmp_path: Path) -> None:
    """Anthropic lists models at /v1/models with x-api-key, Azure at /openai/v1/models
    with api-key, OpenAI at /v1/models with a bearer key: each is probed its own way."""
    anthropic, azure, openai = AnthropicServer(), AzureServer(), OpenAIServer()
    with (
        ServerThread(anthropic.app()) as ant,
        ServerThread(azure.app()) as az,
        ServerThread(openai.app()) as oai,
    ):
        config = _config(
            tmp_path,
            {
                "dep-claude": f"provider: anthropic, base_url: '{ant.url}', "
                f"model: claude-sonnet-4-5, api_key: {ANTHROPIC_KEY}",
                "dep-claude-key": f"provider: anthropic, base_url: '{ant.url}', "
                f"model: claude-sonnet-4-5, api_key: {WRONG_KEY}",
                "dep-azure": f"provider: azure_openai, base_url: '{az.url}', model: gpt-4o, "
                f"api_key: {AZURE_KEY}",
                "dep-openai": f"provider: openai, base_url: '{oai.url}/v1', model: gpt-4o-mini, "
                f"api_key: {OPENAI_KEY}",
            },
        )
        result = forebay("config", "check", str(config), "--probe", "--timeout", "5")
    assert result.returncode == 1, result.stdout + result.stderr
    got = _lines(result.stdout)
    assert got["dep-claude"].split()[0] == "ok" and "claude-sonnet-4-5" in got["dep-claude"]
    assert "FAIL bad key" in got["dep-claude-key"] and "/v1/models" in got["dep-claude-key"]
    assert got["dep-azure"].split()[0] == "ok"
    assert got["dep-openai"].split()[0] == "ok" and "serves 'gpt-4o-mini'" in got["dep-openai"]
    assert "1 of 4 deployments failed" in result.stdout
    assert [s.path for s in azure.seen] == ["/openai/v1/models"]
    assert {s.headers["x-api-key"] for s in anthropic.seen} == {ANTHROPIC_KEY, WRONG_KEY}
    assert WRONG_KEY not in result.stdout + result.stderr
