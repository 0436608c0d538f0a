"""The providers' settings in forebay.yaml: defaults per provider, the fields
each needs, the fields only one reads refused for the others, and secrets
from the environment as for any deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from forebay.config.load import load_settings
from forebay.config.providers import DEFAULT_AZURE_API_VERSION
from forebay.errors import ConfigError
from forebay.gateway.redact import Redactor
from tests.support.deployments import deployment


def test_each_provider_gets_its_default_base_url_and_settings() -> None:
    openai = deployment("provider: openai, model: gpt-4o, api_key: '${K}'", environ={"K": "sk-1"})
    assert (openai.base_url, openai.api_key) == ("https://api.openai.com/v1", "sk-1")
    claude = deployment("provider: anthropic, model: claude-x, api_key: k")
    assert claude.base_url == "https://api.anthropic.com"
    assert (claude.anthropic_version, claude.anthropic_beta) == ("2023-06-01", ())
    azure = deployment(
        "provider: azure_openai, base_url: 'https://r.openai.azure.com/', model: gpt-4o, api_key: k"
    )
    assert azure.base_url == "https://r.openai.azure.com"
    assert (azure.api_version, azure.azure_deployment) == (DEFAULT_AZURE_API_VERSION, "gpt-4o")
    assert not azure.azure_bearer


def test_an_azure_bearer_token_is_the_deployments_secret() -> None:
    dep = deployment(
        "provider: azure_openai, base_url: 'https://r.openai.azure.com', model: m, "
        "azure_ad_token: '${TOKEN}'",
        environ={"TOKEN": "eyJ-entra-token-0123456789"},
    )
    assert dep.azure_bearer and dep.api_key == "eyJ-entra-token-0123456789"
    # Stored as the key, so every configured secret is still redacted from relayed bytes.
    assert (
        Redactor.for_deployments([dep]).redact(b"x eyJ-entra-token-0123456789") == b"x [redacted]"
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("provider: openai, model: m", "needs api_key"),
        ("provider: anthropic, model: m", "needs api_key"),
        ("provider: azure_openai, model: m, api_key: k", "needs base_url"),
        (
            "provider: azure_openai, base_url: 'https://r.openai.azure.com/openai/deployments/x', "
            "model: m, api_key: k",
            "without /openai",
        ),
        (
            "provider: azure_openai, base_url: 'https://r.openai.azure.com', model: m",
            "exactly one of api_key",
        ),
        (
            "provider: azure_openai, base_url: 'https://r.openai.azure.com', model: m, "
            "api_key: k, azure_ad_token: t",
            "exactly one of api_key",
        ),
        (
            "provider: anthropic, base_url: 'https://api.anthropic.com/v1', model: m, api_key: k",
            "without /v1",
        ),
        ("provider: openai, model: m, api_key: k, anthropic_version: '2023-06-01'", "anthropic"),
        ("provider: anthropic, model: m, api_key: k, organization: org-1", "read only by"),
        ("base_url: 'http://h/v1', model: m, api_version: '2024-10-21'", "azure_openai"),
        ("provider: openai, model: m, api_key: k, organisation: org-1", "unknown setting"),
    ],
)
def test_a_provider_says_what_it_needs(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        deployment(spec)
    assert fragment in str(raised.value)
    assert "forebay.yaml:4" in str(raised.value)  # the deployment's line


def test_an_unquoted_date_is_the_version_it_names() -> None:
    dep = deployment(
        "provider: azure_openai, base_url: 'https://r.openai.azure.com', model: m, api_key: k, "
        "api_version: 2025-04-01-preview"
    )
    assert dep.api_version == "2025-04-01-preview"
    claude = deployment("provider: anthropic, model: m, api_key: k, anthropic_version: 2023-06-01")
    assert claude.anthropic_version == "2023-06-01"


def test_an_embedding_model_needs_a_provider_that_embeds(tmp_path: Path) -> None:
    path = tmp_path / "forebay.yaml"
    path.write_text(
        "models:\n  e:\n    kind: embedding\n    deployments:\n"
        "      - {name: c, provider: anthropic, model: claude-x, api_key: k}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(path, data_dir=tmp_path / "data", environ={})
    assert "no embeddings endpoint" in str(raised.value)


def test_the_examples_commented_out_in_forebay_example_yaml_are_valid(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "forebay.example.yaml").read_text()
    block = text.split("# Rented models through")[1].split("\n", 1)[1]
    body = "\n".join(line.replace("  # ", "  ", 1) for line in block.splitlines())
    path = tmp_path / "forebay.yaml"
    path.write_text("models:\n" + body.replace("org-...", "org-x").replace("proj_...", "p") + "\n")
    keys = {"OPENAI_API_KEY": "a", "AZURE_OPENAI_API_KEY": "b", "ANTHROPIC_API_KEY": "c"}
    settings = load_settings(path, data_dir=tmp_path / "data", environ=keys)
    providers = {d.provider for m in settings.models.values() for d in m.deployments}
    assert providers == {"openai", "azure_openai", "anthropic"}
