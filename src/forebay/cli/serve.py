"""`forebay serve`: the gateway, one process or several workers."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Optional

import typer

from forebay.cli.common import (
    ConfigOpt,
    DataDirOpt,
    err,
    fail,
    load_or_exit,
    out,
    print_settings,
)
from forebay.config.locations import Choice, remember_serve


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
    settings = load_or_exit(config, data_dir)
    if workers > 1 and not settings.redis.url:
        err.print(
            f"[red]error:[/red] --workers {workers} needs Redis: set redis.url in "
            f"{settings.source if config else 'a forebay.yaml (--config)'}. Without shared "
            "counters every worker would enforce each rate limit and budget on its own.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    local = [d for m in settings.models.values() for d in m.deployments if d.provider == "local"]
    if workers > 1 and local and (settings.local.port or settings.local.embed_port):
        raise fail(
            f"--workers {workers} would start a local model worker per process on the same "
            "local.port / local.embed_port; set them to 0 (a free port each) or use --workers 1",
            2,
        )
    print_settings(settings)
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
    remember_serve(Choice(settings.data_dir, settings.data_dir_origin), settings.source)
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
