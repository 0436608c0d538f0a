"""The `forebay` command line: serve, keys, tenants, usage, config, plan, sim."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from forebay.cli_common import (
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    err,
    load_or_exit,
    open_database,
    out,
    print_json,
)
from forebay.cli_limits import limits_app

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from forebay.config import Settings
    from forebay.tenancy.store import TenancyStore

app = typer.Typer(
    name="forebay",
    help="A shared, metered, OpenAI-compatible inference plane.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
tenants_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)
config_app = typer.Typer(help="Check a forebay.yaml.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(config_app, name="config")
app.add_typer(limits_app, name="limits")

# --- sub-command registration (each capability owns its own cli module) ---
# planner and sim register here: app.add_typer(plan_app, name="plan") etc.
from forebay.planner.cli import app as plan_app  # noqa: E402
from forebay.sim.cli import sim as sim_command  # noqa: E402

app.add_typer(plan_app, name="plan")
app.command("sim")(sim_command)


def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    return load_or_exit(config, data_dir)


def _store(config: Path | None, data_dir: Path | None) -> tuple[TenancyStore, Engine]:
    from forebay.tenancy.store import TenancyStore

    engine = open_database(config, data_dir)
    return TenancyStore(engine), engine


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address.")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port (default 8080).")] = None,  # noqa: UP045
    workers: Annotated[
        int, typer.Option(min=1, help="Gateway processes; more than 1 needs redis.url.")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve the OpenAI-compatible endpoint (the embedded local model by default)."""
    import uvicorn

    from forebay.app import build_services, create_app, env_admin_key, prepare

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(config, data_dir)
    if workers > 1 and not settings.redis.url:
        err.print(
            f"[red]error:[/red] --workers {workers} needs Redis: set redis.url in "
            f"{settings.source if config else 'a forebay.yaml (--config)'}. Without shared "
            "counters every worker would enforce each rate limit and budget on its own.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    bind_host = host or settings.host
    bind_port = settings.port if port is None else port
    run = {
        "host": bind_host,
        "port": bind_port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": log_level.lower(),
        "access_log": False,
        "timeout_graceful_shutdown": 30,
        # Forebay never uses the client address, so skip X-Forwarded-* rewriting.
        "proxy_headers": False,
        "server_header": False,
    }
    if workers == 1:
        services = build_services(settings, env_admin_key=env_admin_key())
        announce = services.bootstrapped.announce()
    else:
        announce = prepare(settings, env_admin_key=env_admin_key()).announce()
    for line in announce:
        out.print(line, highlight=False, soft_wrap=True)
    out.print(
        f"forebay serving {', '.join(settings.models) or 'no models'} on "
        f"http://{bind_host}:{bind_port}/v1  (config {settings.source}, "
        f"revision {settings.revision}, data {settings.data_dir}, workers {workers})",
        highlight=False,
        soft_wrap=True,
    )
    if workers == 1:
        uvicorn.run(create_app(services), **run)  # type: ignore[arg-type]
        return
    # Each worker process builds its own services from the same config and data dir.
    if config is not None:
        os.environ["FOREBAY_CONFIG"] = str(config.resolve())
    os.environ["FOREBAY_DATA_DIR"] = str(settings.data_dir.resolve())
    uvicorn.run("forebay.app:app_from_env", factory=True, workers=workers, **run)  # type: ignore[arg-type]


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id or name.")],
    models: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Comma-separated model aliases the key may use; all when omitted."),
    ] = None,
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    classes: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Comma-separated traffic classes the key may use; all when omitted."),
    ] = None,
    default_class: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Class of requests without x-forebay-class."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key for a tenant. The key is printed once and stored only as a hash."""
    from forebay.tenancy.store import TenancyError

    store, _ = _store(config, data_dir)
    scope = [m.strip() for m in models.split(",") if m.strip()] if models else None
    allowed = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    known = set(_settings(config, data_dir).classes)
    for c in [*(allowed or []), *([default_class] if default_class else [])]:
        if c not in known:
            err.print(f"[red]error:[/red] unknown class {c!r}; known: {', '.join(sorted(known))}")
            raise typer.Exit(2)
    try:
        issued = store.create_key(
            tenant, models=scope, name=name, classes=allowed, default_class=default_class
        )
    except TenancyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"id:  {issued.info.id}\nkey: {issued.key}", highlight=False)
    err.print("This key is shown once; store it now.")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant.")] = None,  # noqa: UP045
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys (never the keys themselves: id, prefix, tenant, scope, state)."""
    store, _ = _store(config, data_dir)
    if as_json:
        print_json([asdict(k) for k in store.list_keys(tenant=tenant)])
        return
    table = Table("id", "prefix", "tenant", "models", "admin", "created", "state")
    for k in store.list_keys(tenant=tenant):
        table.add_row(
            k.id,
            k.prefix + "…",
            k.tenant_name or "-",
            ",".join(k.models) if k.models else "all",
            "yes" if k.is_admin else "",
            _when(k.created_at),
            "revoked" if k.revoked_at else "active",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `forebay keys list`).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key; running servers stop accepting it within key_refresh_s."""
    store, _ = _store(config, data_dir)
    if not store.revoke_key(key_id):
        err.print(f"[red]error:[/red] no active key with id {key_id}")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="The tenant's name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a tenant."""
    from forebay.tenancy.store import TenancyError

    store, _ = _store(config, data_dir)
    try:
        tenant = store.create_tenant(name)
    except TenancyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"{tenant.id}  {tenant.name}")


@tenants_app.command("list")
def tenants_list(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False
) -> None:
    """List tenants."""
    store, _ = _store(config, data_dir)
    if as_json:
        print_json([asdict(t) for t in store.list_tenants()])
        return
    table = Table("id", "name", "created")
    for t in store.list_tenants():
        table.add_row(t.id, t.name, _when(t.created_at))
    out.print(table)


@app.command()
def usage(
    since: Annotated[str, typer.Option(help="How far back: 30m, 24h, 7d, or a Unix time.")] = "24h",
    by: Annotated[str, typer.Option(help="Group by tenant, model, deployment or key.")] = "tenant",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print usage from the ledger: requests, tokens, cost and energy."""
    from forebay.ledger.query import parse_since, summarize

    if by not in ("tenant", "model", "deployment", "key"):
        err.print("[red]error:[/red] --by must be tenant, model, deployment or key")
        raise typer.Exit(2)
    try:
        start = parse_since(since)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _, engine = _store(config, data_dir)
    rows = summarize(engine, since=start, by=by)  # type: ignore[arg-type]
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    table = Table(
        by,
        "requests",
        "errors",
        "prompt tok",
        "completion tok",
        "cost $",
        "energy Wh",
        "avg ms",
        title=f"usage since {_when(start)}",
    )
    for r in rows:
        table.add_row(
            r.group,
            str(r.requests),
            str(r.errors),
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            f"{r.cost_usd:.6f}",
            f"{r.energy_wh:.4f}",
            f"{r.avg_latency_ms:.1f}",
        )
    out.print(table)


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="The forebay.yaml to check.")],
) -> None:
    """Validate a config file; errors name the field and its line."""
    settings = _settings(path, None)
    deployments = sum(len(m.deployments) for m in settings.models.values())
    out.print(
        f"ok: {len(settings.models)} models, {deployments} deployments, "
        f"revision {settings.revision}"
    )


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def main() -> None:
    app(prog_name="forebay")


if __name__ == "__main__":
    main()
