"""An upstream's 404 tells the admin what to check for that provider: an
OpenAI-compatible server's base_url (should it end in /v1?), OpenAI's model,
Azure's deployment and api-version, Anthropic's, Gemini's and Bedrock's model.
Each 404 is the one the provider's loopback server answers for a deployment
that names something it does not serve."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support import anthropic_server, azure_openai_server, bedrock_server, gemini_server
from tests.support.openai_api_server import API_KEY as OPENAI_KEY
from tests.support.openai_api_server import OpenAIServer
from tests.support.servers import ServerThread


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, str]]:
    apps = {
        "openai": OpenAIServer().app(),
        "azure": azure_openai_server.AzureServer().app(),
        "anthropic": anthropic_server.AnthropicServer().app(),
        "gemini": gemini_server.FakeGemini().app(),
        "bedrock": bedrock_server.FakeBedrock().app(),
    }
    threads = {name: ServerThread(app) for name, app in apps.items()}
    for thread in threads.values():
        thread.__enter__()
    yield {name: thread.url for name, thread in threads.items()}
    for thread in threads.values():
        thread.__exit__(None, None, None)


@pytest.fixture
def gw(
    make_gateway: GatewayFactory, fakes: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bedrock_server.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bedrock_server.SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return make_gateway(
        f"""
    models:
      openai:
        deployments:
          - {{name: d-openai, provider: openai, base_url: "{fakes["openai"]}/v1",
             model: missing, api_key: "{OPENAI_KEY}"}}
      azure:
        deployments:
          - {{name: d-azure, provider: azure_openai, base_url: "{fakes["azure"]}",
             model: gpt-4o, azure_deployment: nowhere, api_key: "{azure_openai_server.API_KEY}"}}
      anthropic:
        deployments:
          - {{name: d-anthropic, provider: anthropic, base_url: "{fakes["anthropic"]}",
             model: missing, api_key: "{anthropic_server.API_KEY}"}}
      gemini:
        deployments:
          - {{name: d-gemini, provider: gemini, base_url: "{fakes["gemini"]}",
             model: palm-2, api_key: "{gemini_server.API_KEY}"}}
      bedrock:
        deployments:
          - {{name: d-bedrock, provider: bedrock, base_url: "{fakes["bedrock"]}",
             model: missing, aws: {{region: {bedrock_server.REGION}}}}}
    """
    )


def _not_found(gw: Gateway, alias: str) -> str:
    resp = httpx.post(
        f"{gw.base_url}/chat/completions",
        json={"model": alias, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {gw.tenant_key}"},
        timeout=20,
    )
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert err["code"] == "upstream_not_found", err
    message = str(err["message"])
    assert f"Deployment 'd-{alias}' answered HTTP 404" in message
    assert "end in /v1" not in message  # the OpenAI-compatible servers' hint only
    return message


@pytest.mark.parametrize(
    ("alias", "hints"),
    [
        ("openai", ["model 'missing'", "https://api.openai.com/v1"]),
        ("azure", ["azure_deployment 'nowhere'", "api_version", "DeploymentNotFound"]),
        ("anthropic", ["model 'missing'", "https://api.anthropic.com"]),
        ("gemini", ["model 'palm-2'", "Gemini model"]),
        ("bedrock", ["model 'missing'", f"enabled in {bedrock_server.REGION}"]),
    ],
)
def test_a_404_names_what_to_check_for_each_provider(
    gw: Gateway, alias: str, hints: list[str]
) -> None:
    message = _not_found(gw, alias)
    for hint in hints:
        assert hint in message, message
