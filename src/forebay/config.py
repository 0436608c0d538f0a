"""One typed schema for forebay.yaml, read once into a frozen runtime object.

Two phases, as the style guide asks: a raw pydantic model that forbids unknown
keys (so a typo is an error naming the field and its line, not a silent
default), then a frozen `Settings` with `${ENV}` references resolved. Nothing
reads configuration dicts at request time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration problem, already phrased for the person who must fix it."""


from forebay.config_traffic import (  # noqa: E402 - kept next to the classes that use them
    DEFAULT_CLASSES,
    AdmissionConfig,
    ResilienceConfig,
    RoutingConfig,
    TrafficClassConfig,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceConfig(_Strict):
    """US dollars per million tokens."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)


class EnergyConfig(_Strict):
    """Joules per token; the ledger turns them into watt-hours per request."""

    joules_per_input_token: float = Field(0.0, ge=0)
    joules_per_output_token: float = Field(0.0, ge=0)


class DeploymentConfig(_Strict):
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

    @model_validator(mode="after")
    def _needs_base_url(self) -> DeploymentConfig:
        if self.provider == "openai_compat" and not self.base_url:
            raise ValueError(
                "an openai_compat deployment needs base_url (e.g. http://host:8000/v1)"
            )
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if self.provider == "local" and self.model not in LOCAL_MODELS:
            raise ValueError(f"local model must be one of {sorted(LOCAL_MODELS)}")
        return self


class ModelConfig(_Strict):
    kind: Literal["chat", "embedding"] = "chat"
    description: str = ""
    routing: RoutingConfig = RoutingConfig()
    deployments: list[DeploymentConfig] = Field(min_length=1)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)


class LocalConfig(_Strict):
    """The embedded llama.cpp worker; threads default to every core."""

    threads: int | None = Field(None, ge=1)
    ctx: int = Field(4096, ge=256)
    parallel: int = Field(4, ge=1)


class LedgerConfig(_Strict):
    queue_size: int = Field(50_000, ge=1)
    batch_size: int = Field(500, ge=1)
    flush_interval_s: float = Field(0.25, gt=0)


class DatabaseConfig(_Strict):
    """SQLAlchemy URL; empty means SQLite in the data directory."""

    url: str = ""


class RedisConfig(_Strict):
    """Shared state for several replicas; empty means in-process counters."""

    url: str = ""
    timeout_s: float = Field(0.5, gt=0)


class RedisDownConfig(_Strict):
    """What limits do while Redis cannot be reached."""

    rate_limits: Literal["local", "allow", "refuse"] = "local"
    budgets: Literal["refuse", "allow"] = "refuse"


class LimitsConfig(_Strict):
    # Output tokens reserved for a request that does not set max_tokens.
    default_output_reserve: int = Field(1024, ge=0)
    # A concurrency slot frees itself after this long even if its replica died.
    concurrency_lease_s: float = Field(900.0, gt=0)
    # After a Redis failure, how long to use the fallback before trying again.
    redis_retry_s: float = Field(1.0, gt=0)
    on_redis_down: RedisDownConfig = RedisDownConfig()


class RawConfig(_Strict):
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


# The models the embedded worker can run: name -> kind.
LOCAL_MODELS: dict[str, Literal["chat", "embedding"]] = {
    "smollm2-135m-instruct": "chat",
    "all-minilm-l6-v2": "embedding",
}

# Built-in default: the embedded models, usable offline. Energy is a rough CPU
# estimate (about 25 W package power over ~85 decode and ~150 prefill tokens/s
# measured on a 2-core machine); replace it with your own measurement.
DEFAULT_CONFIG: dict[str, Any] = {
    "models": {
        "local": {
            "kind": "chat",
            "description": "SmolLM2-135M-Instruct, embedded llama.cpp on CPU",
            "deployments": [
                {
                    "name": "local-smollm2",
                    "provider": "local",
                    "model": "smollm2-135m-instruct",
                    "energy": {"joules_per_input_token": 0.17, "joules_per_output_token": 0.3},
                }
            ],
        },
        "local-embed": {
            "kind": "embedding",
            "description": "all-MiniLM-L6-v2 (int8 ONNX) on CPU",
            "deployments": [
                {
                    "name": "local-minilm",
                    "provider": "local",
                    "model": "all-minilm-l6-v2",
                    "energy": {"joules_per_input_token": 0.01},
                }
            ],
        },
    }
}


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


def load_settings(
    path: Path | None,
    *,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, validate and resolve a config file (or the built-in default)."""
    env = os.environ if environ is None else environ
    if path is None:
        raw_obj: Any = DEFAULT_CONFIG
        text = orjson.dumps(DEFAULT_CONFIG, option=orjson.OPT_SORT_KEYS).decode()
        source, root = "<built-in default>", None
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        source = str(path)
        try:
            root = yaml.compose(text)
            raw_obj = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if raw_obj is None:
            raw_obj = {}
        if not isinstance(raw_obj, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of settings")
        if "models" not in raw_obj:  # a file that only tunes settings keeps the local models
            raw_obj = {**raw_obj, "models": DEFAULT_CONFIG["models"]}
    revision = hashlib.sha256(text.encode()).hexdigest()[:12]
    resolved = _interpolate(raw_obj, env, (), source, root)
    try:
        raw = RawConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, root)) from None
    return _freeze(raw, source=source, revision=revision, data_dir=data_dir, env=env)


def _interpolate(
    value: Any, env: Mapping[str, str], loc: tuple[Any, ...], source: str, root: yaml.Node | None
) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            where = _where(source, root, loc)
            raise ConfigError(
                f"{where}: {_dotted(loc)} refers to ${{{name}}}, which is not set in the "
                f"environment (set it, or write ${{{name}:-default}})"
            )

        return ENV_PATTERN.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, (*loc, k), source, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, (*loc, i), source, root) for i, v in enumerate(value)]
    return value


def _freeze(
    raw: RawConfig,
    *,
    source: str,
    revision: str,
    data_dir: Path | None,
    env: Mapping[str, str],
) -> Settings:
    chosen_dir = data_dir or (Path(raw.data_dir) if raw.data_dir else None)
    if chosen_dir is None:
        chosen_dir = Path(env["FOREBAY_DATA_DIR"]) if "FOREBAY_DATA_DIR" in env else None
    final_dir = (chosen_dir or default_data_dir()).expanduser()
    models: dict[str, ModelAlias] = {}
    for alias, m in raw.models.items():
        deps = []
        for d in m.deployments:
            if d.provider == "local" and LOCAL_MODELS[d.model] != m.kind:
                raise ConfigError(
                    f"{source}: models.{alias} is kind {m.kind!r} but local model "
                    f"{d.model!r} is {LOCAL_MODELS[d.model]!r}"
                )
            deps.append(
                Deployment(
                    name=d.name,
                    alias=alias,
                    provider=d.provider,
                    base_url=d.base_url.rstrip("/") if d.base_url else None,
                    upstream_model=d.model,
                    api_key=d.api_key or None,
                    usd_per_input_token=d.price.input_per_million / 1e6,
                    usd_per_output_token=d.price.output_per_million / 1e6,
                    joules_per_input_token=d.energy.joules_per_input_token,
                    joules_per_output_token=d.energy.joules_per_output_token,
                    timeout_s=d.timeout_s,
                    connect_timeout_s=d.connect_timeout_s,
                    max_connections=d.max_connections,
                    headers=tuple(sorted(d.headers.items())),
                    weight=d.weight,
                    max_concurrency=d.max_concurrency,
                    adaptive_concurrency=d.adaptive_concurrency,
                    first_byte_timeout_s=d.first_byte_timeout_s,
                )
            )
        models[alias] = ModelAlias(alias, m.kind, m.description, tuple(deps), m.routing)
    return Settings(
        host=raw.server.host,
        port=raw.server.port,
        max_body_bytes=raw.server.max_body_bytes,
        data_dir=final_dir,
        database_url=raw.database.url,
        redis=raw.redis,
        limits=raw.limits,
        ledger=raw.ledger,
        local=raw.local,
        key_refresh_s=raw.key_refresh_s,
        classes=dict(raw.classes),
        admission=raw.admission,
        resilience=raw.resilience,
        models=models,
        revision=revision,
        source=source,
    )


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _describe(exc: ValidationError, source: str, root: yaml.Node | None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; see forebay.example.yaml)"
        lines.append(f"{_where(source, root, loc)}: {_dotted(loc) or '(top level)'}: {msg}")
    return "\n".join(lines)


def _where(source: str, root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    line = _line_of(root, loc)
    return f"{source}:{line}" if line else source


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the deepest node of `loc` that exists in the YAML tree."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, val in node.value:
                if key.value == str(part):
                    best = key.start_mark.line + 1
                    nxt = val
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                node = node.value[part]
                best = node.start_mark.line + 1
            else:
                node = None
        else:
            node = None
        if node is None:
            break
    return best
