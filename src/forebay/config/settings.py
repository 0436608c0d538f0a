"""The frozen runtime configuration every component reads, built once at start
with secrets resolved. Nothing reads configuration dicts at request time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from forebay.config.schema import LedgerConfig, LimitsConfig, LocalConfig, RedisConfig
from forebay.config.traffic import (
    AdmissionConfig,
    ResilienceConfig,
    RoutingConfig,
    TrafficClassConfig,
)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model alias can be served from, with secrets resolved."""

    name: str
    alias: str
    provider: Literal["openai_compat", "local"]
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
    adaptive_floor: int | None = None


@dataclass(frozen=True, slots=True)
class ModelAlias:
    name: str
    kind: Literal["chat", "embedding"]
    description: str
    deployments: tuple[Deployment, ...]
    routing: RoutingConfig = field(default_factory=RoutingConfig)


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


def default_data_dir() -> Path:
    env = os.environ.get("FOREBAY_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "forebay"
