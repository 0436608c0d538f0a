"""What each upstream provider needs in forebay.yaml: its default base_url, the
settings only it reads, and the checks that make a half-configured deployment
an error at load time rather than a 401 or a 404 at the first request.

One table row per provider, so adding one is a few lines here and a class in
upstreams/; load.py and the schema only call `check_provider` and
`provider_settings`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Provider = Literal["openai_compat", "local", "openai", "azure_openai", "anthropic"]

DEFAULT_BASE_URLS: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
# The newest generally available api-version of Azure's deployment routes
# (chat/completions, completions, embeddings); the v1 routes (Responses) take none.
DEFAULT_AZURE_API_VERSION = "2024-10-21"

# Settings that only some providers read: given for another, they are an error
# rather than silently ignored.
PROVIDER_ONLY: Mapping[str, frozenset[str]] = {
    "organization": frozenset({"openai"}),
    "project": frozenset({"openai"}),
    "api_version": frozenset({"azure_openai"}),
    "azure_deployment": frozenset({"azure_openai"}),
    "azure_ad_token": frozenset({"azure_openai"}),
    "anthropic_version": frozenset({"anthropic"}),
    "anthropic_beta": frozenset({"anthropic"}),
}
# Providers that cannot work without a key (`api_key` written, even as an
# ${ENV} that may be empty: config check then says so, as for any empty key).
NEEDS_KEY = frozenset({"openai", "anthropic"})
# Providers with an embeddings endpoint; the others serve chat aliases only.
EMBEDS = frozenset({"openai_compat", "local", "openai", "azure_openai"})


def check_provider(provider: str, given: Mapping[str, Any]) -> None:
    """Raise ValueError (pydantic reports it with the deployment's line) when the
    settings `given` (name -> value, only those written) do not fit `provider`."""
    for name in given:
        readers = PROVIDER_ONLY.get(name)
        if readers is not None and provider not in readers:
            raise ValueError(
                f"{name} is read only by provider {' / '.join(sorted(readers))}, not by {provider}"
            )
    base_url = given.get("base_url")
    if provider == "openai_compat" and not base_url:
        raise ValueError("an openai_compat deployment needs base_url (e.g. http://host:8000/v1)")
    if provider in NEEDS_KEY and given.get("api_key") is None:
        env = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
        raise ValueError(f"a {provider} deployment needs api_key (e.g. api_key: ${{{env}}})")
    if provider == "anthropic" and str(base_url or "").rstrip("/").endswith("/v1"):
        raise ValueError(
            "an anthropic base_url is the host, without /v1 (e.g. https://api.anthropic.com): "
            "Forebay adds /v1/messages"
        )
    if provider == "azure_openai":
        _check_azure(given)


def _check_azure(given: Mapping[str, Any]) -> None:
    base_url = given.get("base_url")
    if not base_url:
        raise ValueError(
            "an azure_openai deployment needs base_url: its resource endpoint, "
            "e.g. https://NAME.openai.azure.com"
        )
    if "/openai" in str(base_url):
        raise ValueError(
            "an azure_openai base_url is the resource endpoint alone (e.g. "
            "https://NAME.openai.azure.com), without /openai/...: Forebay adds the "
            "deployment and v1 paths; name the deployment in azure_deployment"
        )
    if (given.get("api_key") is None) == (given.get("azure_ad_token") is None):
        raise ValueError(
            "an azure_openai deployment needs exactly one of api_key (sent as the api-key "
            "header) and azure_ad_token (a Microsoft Entra ID bearer token)"
        )


def provider_settings(provider: str, given: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The `Deployment` fields of `provider`, defaults filled in (secrets resolved
    by then). Azure's bearer token travels as `api_key`, so that every consumer of
    the key (redaction above all) covers it without knowing about Azure."""
    out: dict[str, Any] = {}
    base_url = given.get("base_url") or DEFAULT_BASE_URLS.get(provider)
    out["base_url"] = base_url.rstrip("/") if base_url else None
    if provider == "openai":
        out["organization"] = given.get("organization") or None
        out["project"] = given.get("project") or None
    elif provider == "azure_openai":
        out["api_version"] = given.get("api_version") or DEFAULT_AZURE_API_VERSION
        out["azure_deployment"] = given.get("azure_deployment") or model
        token = given.get("azure_ad_token")
        if token is not None:
            out["api_key"] = token or None
            out["azure_bearer"] = True
    elif provider == "anthropic":
        out["anthropic_version"] = given.get("anthropic_version") or DEFAULT_ANTHROPIC_VERSION
        out["anthropic_beta"] = tuple(given.get("anthropic_beta") or ())
    return out
