"""Read forebay.yaml in two phases: validate the raw schema (errors name the
field and its line), then freeze it into `Settings` with `${ENV}` references
resolved."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from forebay.config.defaults import DEFAULT_CONFIG, DEFAULT_CONTEXT_TOKENS, LOCAL_MODELS
from forebay.config.locations import Choice, choose_config, choose_data_dir
from forebay.config.notices import notices_for
from forebay.config.providers import provider_settings
from forebay.config.schema import DeploymentConfig, LocalConfig, RawConfig
from forebay.config.settings import Deployment, ModelAlias, PartBounds, Settings
from forebay.errors import ConfigError

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_for_command(
    config: Path | None,
    data_dir: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings as every command resolves them (see `config.locations`): the flags
    given, else FOREBAY_CONFIG / FOREBAY_DATA_DIR, else the file, else the defaults."""
    env = os.environ if environ is None else environ
    chosen = choose_config(config, env)
    return load_settings(chosen.path, data_dir=data_dir, environ=env, config_origin=chosen.origin)


def load_settings(
    path: Path | None,
    *,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    config_origin: str = "",
) -> Settings:
    """Read, validate and resolve a config file (or the built-in default).
    `data_dir` is the `--data-dir` flag; without it FOREBAY_DATA_DIR, the file's
    data_dir and the default follow, in that order."""
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
        raw_obj = _with_local_models(raw_obj)
    revision = hashlib.sha256(text.encode()).hexdigest()[:12]
    resolved = _interpolate(raw_obj, env, (), source, root)
    try:
        raw = RawConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, root)) from None
    chosen_dir = choose_data_dir(data_dir, env, raw.data_dir, path)
    settings = _freeze(raw, source=source, revision=revision, data_dir=chosen_dir)
    notices = notices_for(settings, raw_obj if path is not None else None)
    return replace(settings, config_origin=config_origin, notices=notices)


def _with_local_models(raw_obj: dict[str, Any]) -> dict[str, Any]:
    """A file without `models:` serves the built-in local models; one with it serves
    only its own, unless `include_local_models: true` adds the built-ins (an alias
    the file defines itself takes precedence)."""
    builtin = DEFAULT_CONFIG["models"]
    models = raw_obj.get("models")
    if models is None:
        return {**raw_obj, "models": builtin}
    if raw_obj.get("include_local_models") is True and isinstance(models, dict):
        return {**raw_obj, "models": {**builtin, **models}}
    return raw_obj


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


def _per_token(per_million: float | None) -> float | None:
    return None if per_million is None else per_million / 1e6


def _freeze(raw: RawConfig, *, source: str, revision: str, data_dir: Choice) -> Settings:
    assert data_dir.path is not None
    models: dict[str, ModelAlias] = {}
    for alias, m in raw.models.items():
        deps = []
        for d in m.deployments:
            max_concurrency = d.max_concurrency
            if d.provider == "local":
                if LOCAL_MODELS[d.model] != m.kind:
                    raise ConfigError(
                        f"{source}: models.{alias} is kind {m.kind!r} but local model "
                        f"{d.model!r} is {LOCAL_MODELS[d.model]!r}"
                    )
                # The worker's slots are the most it runs at once: more would
                # queue inside it, out of reach of admission's classes and shedding.
                slots = _local_slots(raw.local, d.model)
                max_concurrency = min(d.max_concurrency or slots, slots)
            given = {name: getattr(d, name) for name in d.model_fields_set}
            fields = {
                "api_key": d.api_key or None,
                **provider_settings(d.provider, given, d.model),
            }
            deps.append(
                Deployment(
                    name=d.name,
                    alias=alias,
                    provider=d.provider,
                    upstream_model=d.model,
                    usd_per_input_token=d.price.input_per_million / 1e6,
                    usd_per_output_token=d.price.output_per_million / 1e6,
                    joules_per_input_token=d.energy.joules_per_input_token,
                    joules_per_output_token=d.energy.joules_per_output_token,
                    timeout_s=d.timeout_s,
                    connect_timeout_s=d.connect_timeout_s,
                    max_connections=d.max_connections,
                    headers=tuple(sorted(d.headers.items())),
                    weight=d.weight,
                    max_concurrency=max_concurrency,
                    adaptive_concurrency=d.adaptive_concurrency,
                    first_byte_timeout_s=d.first_byte_timeout_s,
                    bounds=_bounds(d, raw.local.ctx),
                    adaptive_floor=d.adaptive_floor,
                    **fields,
                    usd_per_cache_read_token=_per_token(d.price.cache_read_per_million),
                    usd_per_cache_write_token=_per_token(d.price.cache_write_per_million),
                )
            )
        models[alias] = ModelAlias(
            alias,
            m.kind,
            m.description,
            tuple(deps),
            m.routing,
            hosted_tools=m.hosted_tools or raw.hosted_tools,
        )
    _check_local_ports(raw, source)
    return Settings(
        host=raw.server.host,
        port=raw.server.port,
        max_body_bytes=raw.server.max_body_bytes,
        data_dir=data_dir.path,
        data_dir_origin=data_dir.origin,
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
        auth=raw.auth,
        server=raw.server,
        probes=raw.probes,
        responses=raw.responses,
    )


def _bounds(d: DeploymentConfig, local_ctx: int) -> PartBounds:
    context = d.context_tokens or (local_ctx if d.provider == "local" else DEFAULT_CONTEXT_TOKENS)
    return PartBounds(
        image_tokens=d.reserve.image_tokens,
        audio_tokens_per_mb=d.reserve.audio_tokens_per_mb,
        file_tokens=context if d.reserve.file_tokens is None else d.reserve.file_tokens,
        context_tokens=context,
    )


def _local_slots(local: LocalConfig, model: str) -> int:
    return local.parallel if LOCAL_MODELS[model] == "chat" else local.embed_parallel


def _check_local_ports(raw: RawConfig, source: str) -> None:
    """A fixed worker port can serve one worker: refuse two that would collide."""
    users: dict[int, list[str]] = {}
    for m in raw.models.values():
        for d in m.deployments:
            if d.provider == "local":
                chat = LOCAL_MODELS[d.model] == "chat"
                port = raw.local.port if chat else raw.local.embed_port
                if port:
                    users.setdefault(port, []).append(d.name)
    for port, names in users.items():
        if len(names) > 1:
            raise ConfigError(
                f"{source}: local deployments {', '.join(names)} would all listen on port "
                f"{port} (local.port / local.embed_port); leave the port at 0 (a free one) "
                "or keep one local deployment per worker kind"
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
