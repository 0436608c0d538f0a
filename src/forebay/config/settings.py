"""The frozen runtime configuration every component reads, built once at start
with secrets resolved. Nothing reads configuration dicts at request time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from forebay.config.defaults import (
    DEFAULT_AUDIO_TOKENS_PER_MB,
    DEFAULT_CONTEXT_TOKENS,
    DEFAULT_IMAGE_TOKENS,
)
from forebay.config.providers import DEFAULT_ANTHROPIC_VERSION, Provider
from forebay.config.schema import (
    AuthConfig,
    HostedTools,
    LedgerConfig,
    LimitsConfig,
    LocalConfig,
    ProbeConfig,
    RedisConfig,
    ResponsesConfig,
    ServerConfig,
)
from forebay.config.traffic import (
    AdmissionConfig,
    ResilienceConfig,
    RoutingConfig,
    TrafficClassConfig,
)


@dataclass(frozen=True, slots=True)
class PartBounds:
    """Upper bounds on the prompt tokens of content other than text, for one deployment
    (see `ReserveConfig`); all resolved, nothing optional."""

    image_tokens: int = DEFAULT_IMAGE_TOKENS
    audio_tokens_per_mb: int = DEFAULT_AUDIO_TOKENS_PER_MB
    file_tokens: int = DEFAULT_CONTEXT_TOKENS
    context_tokens: int = DEFAULT_CONTEXT_TOKENS


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """A bedrock deployment's region and, when given, its own credentials."""

    region: str
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model alias can be served from, with secrets resolved."""

    name: str
    alias: str
    provider: Provider
    base_url: str | None
    upstream_model: str
    api_key: str | None = field(repr=False)
    usd_per_input_token: float
    usd_per_output_token: float
    joules_per_input_token: float
    joules_per_output_token: float
    timeout_s: float
    connect_timeout_s: float
    max_connections: int
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    weight: float = 1.0
    max_concurrency: int | None = None
    adaptive_concurrency: bool = True
    first_byte_timeout_s: float | None = None
    bounds: PartBounds = PartBounds()
    adaptive_floor: int | None = None
    # Provider-specific (config/providers.py), defaults resolved.
    organization: str | None = None  # openai
    project: str | None = None  # openai
    api_version: str | None = None  # azure_openai, deployment routes
    azure_deployment: str | None = None  # azure_openai
    azure_bearer: bool = False  # azure_openai: api_key is an Entra ID token (Authorization)
    anthropic_version: str = DEFAULT_ANTHROPIC_VERSION
    anthropic_beta: tuple[str, ...] = ()
    # Prompt tokens read from, and written to, the provider's prompt cache; None:
    # priced as ordinary input (gateway/metering.py cost_usd).
    usd_per_cache_read_token: float | None = None
    usd_per_cache_write_token: float | None = None
    aws: AwsSettings | None = None  # bedrock

    def secrets(self) -> tuple[str, ...]:
        """Every configured secret of this deployment, for redaction."""
        found = [self.api_key or "", *(value for _, value in self.headers)]
        if self.aws is not None:
            found += [self.aws.secret_access_key or "", self.aws.session_token or ""]
        return tuple(s for s in found if s)


@dataclass(frozen=True, slots=True)
class ModelAlias:
    name: str
    kind: Literal["chat", "embedding"]
    description: str
    deployments: tuple[Deployment, ...]
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    hosted_tools: HostedTools = "drop"  # config/schema.py's HostedTools


@dataclass(frozen=True, slots=True)
class Settings:
    """The runtime configuration every component reads; built once at start."""

    host: str
    port: int
    max_body_bytes: int
    data_dir: Path
    database_url: str
    redis: RedisConfig
    limits: LimitsConfig
    ledger: LedgerConfig
    local: LocalConfig
    key_refresh_s: float
    classes: Mapping[str, TrafficClassConfig]
    admission: AdmissionConfig
    resilience: ResilienceConfig
    models: Mapping[str, ModelAlias]
    revision: str
    source: str
    auth: AuthConfig = field(default_factory=AuthConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    # What chose the config file and the data directory (a flag, a variable,
    # the file, the default): printed by `serve`, named when a store is missing.
    config_origin: str = ""
    data_dir_origin: str = ""
    # What a person should know about this config (printed by serve and config check).
    notices: tuple[str, ...] = ()
