"""The raw schema of forebay.yaml: pydantic models that forbid unknown keys, so
a typo is an error naming the field and its line, not a silent default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forebay.config.defaults import DEFAULT_MAX_BODY_BYTES, LOCAL_MODELS
from forebay.config.strict import Strict
from forebay.config.traffic import (
    DEFAULT_CLASSES,
    AdmissionConfig,
    ResilienceConfig,
    RoutingConfig,
    TrafficClassConfig,
)


class PriceConfig(Strict):
    """US dollars per million tokens."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)


class EnergyConfig(Strict):
    """Joules per token; the ledger turns them into watt-hours per request."""

    joules_per_input_token: float = Field(0.0, ge=0)
    joules_per_output_token: float = Field(0.0, ge=0)


class DeploymentConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    provider: Literal["openai_compat", "local"] = "openai_compat"
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
    adaptive_floor: int | None = Field(
        None,
        ge=1,
        description="lowest the adaptive limit may go; default a quarter of max_concurrency",
    )

    @model_validator(mode="after")
    def _needs_base_url(self) -> DeploymentConfig:
        if self.provider == "openai_compat" and not self.base_url:
            raise ValueError(
                "an openai_compat deployment needs base_url (e.g. http://host:8000/v1)"
            )
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        floor, ceiling = self.adaptive_floor, self.max_concurrency
        if floor and ceiling and floor > ceiling:
            raise ValueError("adaptive_floor must not exceed max_concurrency")
        if self.provider == "local" and self.model not in LOCAL_MODELS:
            raise ValueError(f"local model must be one of {sorted(LOCAL_MODELS)}")
        return self


class ModelConfig(Strict):
    kind: Literal["chat", "embedding"] = "chat"
    description: str = ""
    routing: RoutingConfig = RoutingConfig()
    deployments: list[DeploymentConfig] = Field(min_length=1)


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)


class LocalConfig(Strict):
    """The embedded llama.cpp worker; threads default to every core."""

    threads: int | None = Field(None, ge=1)
    ctx: int = Field(4096, ge=256)
    parallel: int = Field(4, ge=1)


class LedgerConfig(Strict):
    queue_size: int = Field(50_000, ge=1)
    batch_size: int = Field(500, ge=1)
    flush_interval_s: float = Field(0.25, gt=0)


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


class RawConfig(Strict):
    data_dir: str | None = None
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    limits: LimitsConfig = LimitsConfig()
    ledger: LedgerConfig = LedgerConfig()
    local: LocalConfig = LocalConfig()
    key_refresh_s: float = Field(5.0, gt=0)
    classes: dict[str, TrafficClassConfig] = DEFAULT_CLASSES
    admission: AdmissionConfig = AdmissionConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    models: dict[str, ModelConfig] = {}

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
