"""The raw schema of forebay.yaml: pydantic models that forbid unknown keys, so
a typo is an error naming the field and its line, not a silent default."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from forebay.config.defaults import (
    DEFAULT_AUDIO_TOKENS_PER_MB,
    DEFAULT_CONTEXT_TOKENS,
    DEFAULT_IMAGE_TOKENS,
    DEFAULT_MAX_BODY_BYTES,
    LOCAL_MODELS,
)
from forebay.config.providers import EMBEDS, Provider, check_provider
from forebay.config.strict import Strict
from forebay.config.traffic import (
    DEFAULT_CLASSES,
    AdmissionConfig,
    ResilienceConfig,
    RoutingConfig,
    TrafficClassConfig,
)


class PriceConfig(Strict):
    """US dollars per million tokens. Input tokens read from the provider's prompt
    cache, and those written to it, have prices of their own where the provider
    sets them (Anthropic, OpenAI, Gemini); unset, they cost as ordinary input.
    Reasoning tokens are output."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    cache_read_per_million: float | None = Field(None, ge=0)
    cache_write_per_million: float | None = Field(None, ge=0)


class EnergyConfig(Strict):
    """Joules per token; the ledger turns them into watt-hours per request."""

    joules_per_input_token: float = Field(0.0, ge=0)
    joules_per_output_token: float = Field(0.0, ge=0)


class ReserveConfig(Strict):
    """Upper bounds on the prompt tokens one non-text content part can cost. Budgets and
    TPM reserve them before dispatch, so they must be at least what the upstream counts.

    Defaults and where they come from:
      image_tokens 16384: Qwen2-VL / Qwen2.5-VL at their default max_pixels (the most of
        the common self-hosted families; Llama 3.2 Vision is at most 6,404), above OpenAI's
        tile formula for GPT-4o-class models (at most 85 + 8 x 170 = 1,445 at detail high),
        its patch models (at most 1,536 patches x 2.46) and Anthropic's (about 1,600).
        gpt-4o-mini counts 2,833 + 5,667 per tile: set 48169 for it.
      audio_tokens_per_mb 32000: per MB of audio data as sent (base64): MP3 at 8 kbps, the
        lowest bitrate, lasts 1,000 s per MB, at 32 tokens per second (Gemini's published
        rate, above OpenAI's 10/s and Qwen2-Audio's 25/s); base64 adds a third on top.
      file_tokens: the deployment's context size (a PDF's text and page images can fill it).
    Audio given by reference rather than inline, and part types Forebay does not know,
    reserve the context size."""

    image_tokens: int = Field(DEFAULT_IMAGE_TOKENS, ge=0, description="per image part")
    audio_tokens_per_mb: int = Field(
        DEFAULT_AUDIO_TOKENS_PER_MB, ge=0, description="per MB of inline audio data"
    )
    file_tokens: int | None = Field(None, ge=0, description="per file part; default context")


class AwsConfig(Strict):
    """How a `bedrock` deployment signs its requests (SigV4). Without keys or a profile,
    credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    AWS_SESSION_TOKEN, AWS_PROFILE, the shared files, the instance role), found on the first
    request and refreshed before they expire. A Bedrock API key goes in the deployment's
    api_key (or AWS_BEARER_TOKEN_BEDROCK) instead."""

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", description="e.g. us-east-1")
    profile: str | None = Field(None, min_length=1, description="a profile of ~/.aws/config")
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> AwsConfig:
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        if self.session_token and not self.access_key_id:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.profile and self.access_key_id:
            raise ValueError("set either profile or access keys, not both")
        return self


class DeploymentConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    provider: Provider = "openai_compat"
    base_url: str | None = None
    model: str = Field(min_length=1)
    api_key: str | None = None
    price: PriceConfig = PriceConfig()
    energy: EnergyConfig = EnergyConfig()
    timeout_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    max_connections: int = Field(256, ge=1)
    headers: dict[str, str] = {}
    weight: float = Field(1.0, gt=0, description="share of traffic under the weighted policy")
    max_concurrency: int | None = Field(None, ge=1, description="static cap on requests in flight")
    adaptive_concurrency: bool = Field(
        True, description="lower the cap when latency rises, raise it while latency holds"
    )
    first_byte_timeout_s: float | None = Field(
        None, gt=0, description="per-try limit on waiting for the first byte"
    )
    context_tokens: int | None = Field(
        None,
        ge=1,
        description="the model's context size: what a part of unknown type reserves "
        f"(default {DEFAULT_CONTEXT_TOKENS:,}; local.ctx for the embedded model)",
    )
    reserve: ReserveConfig = ReserveConfig()
    adaptive_floor: int | None = Field(
        None,
        ge=1,
        description="lowest the adaptive limit may go; default a quarter of max_concurrency",
    )
    # Read by one provider each (config/providers.py says which; elsewhere an error).
    organization: str | None = Field(None, description="openai: the OpenAI-Organization header")
    project: str | None = Field(None, description="openai: the OpenAI-Project header")
    api_version: str | None = Field(
        None, description="azure_openai: api-version of the deployment routes"
    )
    azure_deployment: str | None = Field(
        None, description="azure_openai: the deployment name; default model"
    )
    azure_ad_token: str | None = Field(
        None, description="azure_openai: a Microsoft Entra ID bearer token, instead of api_key"
    )
    anthropic_version: str | None = Field(
        None, description="anthropic: the anthropic-version header; default 2023-06-01"
    )
    anthropic_beta: list[str] | None = Field(
        None, description="anthropic: beta features, sent as the anthropic-beta header"
    )
    aws: AwsConfig | None = Field(None, description="bedrock: its region and credentials")

    @field_validator("api_version", "anthropic_version", mode="before")
    @classmethod
    def _date_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 2024-10-21 as a date; the header wants it as written.
        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _fits_provider(self) -> DeploymentConfig:
        check_provider(self.provider, {name: getattr(self, name) for name in self.model_fields_set})
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        floor, ceiling = self.adaptive_floor, self.max_concurrency
        if floor and ceiling and floor > ceiling:
            raise ValueError("adaptive_floor must not exceed max_concurrency")
        if self.provider == "local" and self.model not in LOCAL_MODELS:
            raise ValueError(f"local model must be one of {sorted(LOCAL_MODELS)}")
        return self


# What a hosted tool the caller offered but did not force (Responses' web_search,
# file_search, ...; Anthropic's server tools) does on an alias none of whose
# deployments speaks the caller's protocol natively: dropped, with the response
# header x-forebay-dropped-tools naming it, or refused with a 400.
HostedTools = Literal["drop", "refuse"]


class ModelConfig(Strict):
    kind: Literal["chat", "embedding"] = "chat"
    description: str = ""
    routing: RoutingConfig = RoutingConfig()
    hosted_tools: HostedTools | None = Field(
        None, description="drop or refuse an unforced hosted tool; default the top-level one"
    )
    deployments: list[DeploymentConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _deployments_serve_kind(self) -> ModelConfig:
        if self.kind == "embedding":
            for dep in self.deployments:
                if dep.provider not in EMBEDS:
                    raise ValueError(
                        f"deployment {dep.name!r}: provider {dep.provider} has no embeddings "
                        f"endpoint; an embedding model needs one of {sorted(EMBEDS)}"
                    )
        return self


class ServerConfig(Strict):
    """The HTTP listener, and the bounds that keep a client without a key from
    exhausting it (sizes, time and connections are all capped at the socket)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    # The request head (request line and header lines); larger gets 431.
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(100, ge=8, le=10_000)
    # From connection open (or a keep-alive request's first byte) to the end of its head.
    header_timeout_s: float = Field(10.0, gt=0)
    # From the end of the head to the end of the body: the whole body, not per chunk.
    body_timeout_s: float = Field(60.0, gt=0)
    # Idle time allowed between requests on a kept-alive connection.
    keep_alive_timeout_s: int = Field(5, ge=1)
    # Open client connections; at the cap the longest-idle one is closed for a
    # newcomer, or the newcomer gets 503 when none is idle.
    max_connections: int = Field(4096, ge=1)
    # Bearer token that may read /metrics and /readyz details (the admin key may too).
    metrics_token: SecretStr = SecretStr("")
    # host:port of a second listener that serves only /metrics, without auth.
    metrics_listen: str = ""

    @model_validator(mode="after")
    def _metrics_listen_is_host_port(self) -> ServerConfig:
        if self.metrics_listen:
            host, sep, port = self.metrics_listen.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError("metrics_listen must be host:port, e.g. 127.0.0.1:9464")
        return self

    def metrics_address(self) -> tuple[str, int] | None:
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


class ProbeConfig(Strict):
    """Background health checks of remote deployments (GET {base_url}/models with
    the deployment's credentials), off the request path. A deployment that fails
    them is skipped while another deployment of its alias passes."""

    enabled: bool = True
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)


class LocalConfig(Strict):
    """The embedded workers; threads default to every core. Each local deployment's
    concurrency limit is its worker's slot count (`parallel`, `embed_parallel`), so
    requests wait in Forebay's admission queue, by class, not inside the worker."""

    threads: int | None = Field(None, ge=1)
    ctx: int = Field(4096, ge=256, description="llama.cpp context, shared by the slots")
    parallel: int = Field(4, ge=1, description="llama.cpp slots: requests generated at once")
    port: int = Field(0, ge=0, le=65535, description="llama.cpp worker port; 0: a free one")
    embed_parallel: int = Field(2, ge=1, description="embedding requests the MiniLM worker runs")
    embed_port: int = Field(0, ge=0, le=65535, description="MiniLM worker port; 0: a free one")


class LedgerConfig(Strict):
    queue_size: int = Field(50_000, ge=1)
    batch_size: int = Field(500, ge=1)
    flush_interval_s: float = Field(0.25, gt=0)
    spool: bool = Field(
        True, description="append usage to <data dir>/spool first, so a killed process loses none"
    )
    spool_segment_bytes: int = Field(
        1 << 20, ge=4096, description="rotate spool files at this size"
    )


class ResponsesConfig(Strict):
    """Responses kept for `previous_response_id` and GET /v1/responses/{id} (the
    Responses API stores by default), in the ledger database, per tenant."""

    retention_days: float = Field(30.0, gt=0, description="a stored response is deleted after")
    purge_interval_s: float = Field(3600.0, gt=0, description="how often expired ones are purged")
    max_chain: int = Field(
        1000, ge=1, description="previous responses one request may continue at most"
    )
    max_pending: int = Field(
        10_000, ge=1, description="responses waiting to be written, at most (memory bound)"
    )
    background_grace_s: float = Field(
        5.0,
        ge=0,
        description="at shutdown, how long background responses may still run before they "
        "are cancelled (and saved as failed: interrupted)",
    )


class AuthThrottleConfig(Strict):
    """Refuse (429) every request from a source address that failed
    authentication `max_failures` times within `window_s`, for `window_s`.
    The address is the TCP peer: behind a load balancer or proxy every client
    shares one, so raise the limit there or turn this off."""

    enabled: bool = True
    max_failures: int = Field(20, ge=1)
    window_s: float = Field(60.0, gt=0)
    max_sources: int = Field(10_000, ge=1, description="addresses tracked at most (memory bound)")


class AuthConfig(Strict):
    throttle: AuthThrottleConfig = AuthThrottleConfig()
    # Failed authentication is logged as one summary line per interval, never per request.
    failure_log_interval_s: float = Field(60.0, gt=0)


class DatabaseConfig(Strict):
    """SQLAlchemy URL; empty means SQLite in the data directory."""

    url: str = ""


class RedisConfig(Strict):
    """Shared state for several replicas; empty means in-process counters."""

    url: str = ""
    timeout_s: float = Field(0.5, gt=0)


class RedisDownConfig(Strict):
    """What limits do while Redis cannot be reached."""

    rate_limits: Literal["local", "allow", "refuse"] = "local"
    budgets: Literal["refuse", "allow"] = "refuse"


class LimitsConfig(Strict):
    # Output tokens reserved for a request that does not set max_tokens.
    default_output_reserve: int = Field(1024, ge=0)
    # A concurrency slot frees itself after this long even if its replica died.
    concurrency_lease_s: float = Field(900.0, gt=0)
    # After a Redis failure, how long to use the fallback before trying again.
    redis_retry_s: float = Field(1.0, gt=0)
    on_redis_down: RedisDownConfig = RedisDownConfig()
    # How often each replica re-reads budgeted spend from the ledger's daily rollups, the
    # value a budget counter starts from when it is missing (a Redis that restarted empty).
    spend_refresh_s: float = Field(1.0, gt=0)


class RawConfig(Strict):
    data_dir: str | None = None
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    limits: LimitsConfig = LimitsConfig()
    ledger: LedgerConfig = LedgerConfig()
    responses: ResponsesConfig = ResponsesConfig()
    auth: AuthConfig = AuthConfig()
    local: LocalConfig = LocalConfig()
    # How often each replica checks the database's change counter (one single-row SELECT);
    # keys and limits are re-read only when it moved.
    key_refresh_s: float = Field(0.25, gt=0)
    probes: ProbeConfig = ProbeConfig()
    classes: dict[str, TrafficClassConfig] = DEFAULT_CLASSES
    admission: AdmissionConfig = AdmissionConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    models: dict[str, ModelConfig] = {}
    # Every alias's `hosted_tools` unless it sets its own.
    hosted_tools: HostedTools = "drop"
    # A `models:` block replaces the built-in local models; true keeps them beside it.
    include_local_models: bool = False

    @model_validator(mode="after")
    def _default_class_exists(self) -> RawConfig:
        if self.admission.default_class not in self.classes:
            raise ValueError(
                f"admission.default_class {self.admission.default_class!r} is not one of the "
                f"classes: {sorted(self.classes)}"
            )
        return self

    @model_validator(mode="after")
    def _unique_deployments(self) -> RawConfig:
        seen: dict[str, str] = {}
        for alias, model in self.models.items():
            for dep in model.deployments:
                if dep.name in seen:
                    raise ValueError(
                        f"deployment name {dep.name!r} is used by both {seen[dep.name]!r} "
                        f"and {alias!r}; names must be unique"
                    )
                seen[dep.name] = alias
        return self
