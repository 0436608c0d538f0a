"""`forebay serve`: the gateway, one process or several workers."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

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

if TYPE_CHECKING:
    from forebay.tenancy.bootstrap import Bootstrapped


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
    from uvicorn.supervisors import Multiprocess

    from forebay.api.server import BindError, bind_listeners, raise_fd_limit, uvicorn_config
    from forebay.app import build_services, env_admin_key, prepare, served_app

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
    bind_host = host or settings.host
    bind_port = settings.port if port is None else port
    # Bind before anything starts (database, keys, local workers), so a busy
    # port is one clear line, not a traceback after "serving on".
    try:
        listeners = bind_listeners(bind_host, bind_port, settings.server)
    except BindError as exc:
        raise fail(str(exc), 2) from None
    raise_fd_limit()
    print_settings(settings)
    if workers == 1:
        services = build_services(settings, env_admin_key=env_admin_key())
        boot = services.bootstrapped
    else:
        boot = prepare(settings, env_admin_key=env_admin_key())
    remember_serve(Choice(settings.data_dir, settings.data_dir_origin), settings.source)
    _show_first_keys(boot, settings.data_dir)
    metrics_at = settings.server.metrics_address()
    extra = ""
    if metrics_at is not None:
        extra = f"; /metrics on http://{metrics_at[0]}:{listeners.metrics_port}"
    out.print(
        f"forebay serving {', '.join(settings.models) or 'no models'} on "
        f"http://{bind_host}:{listeners.port}/v1{extra}  (config {settings.source}, "
        f"revision {settings.revision}, data {settings.data_dir}, workers {workers})",
        highlight=False,
        soft_wrap=True,
    )
    level = log_level.lower()
    if workers == 1:
        app = served_app(services, listeners.metrics_port)
        server = uvicorn.Server(uvicorn_config(app, settings.server, log_level=level))
        server.run(sockets=listeners.sockets)
        if not server.started:
            raise typer.Exit(3)
        return
    # Each worker process builds its own services from the same config and data dir.
    if config is not None:
        os.environ["FOREBAY_CONFIG"] = str(config.resolve())
    os.environ["FOREBAY_DATA_DIR"] = str(settings.data_dir.resolve())
    if listeners.metrics_port is not None:
        os.environ["FOREBAY_METRICS_PORT"] = str(listeners.metrics_port)
    app_config = uvicorn_config(
        "forebay.app:app_from_env", settings.server, log_level=level, workers=workers, factory=True
    )
    Multiprocess(app_config, sockets=listeners.sockets).run()


def _show_first_keys(boot: Bootstrapped, data_dir: Path) -> None:
    """First-start keys on a terminal only: output that is not a terminal ends
    up in log files, so there the keys go to a file only this user can read."""
    lines = boot.announce()
    if not lines:
        return
    if sys.stdout.isatty():
        for line in lines:
            out.print(line, highlight=False, soft_wrap=True)
        return
    path = boot.save(data_dir)
    out.print(
        f"first-start keys written to {path} (readable by this user only; they are not "
        "printed because the output is not a terminal)",
        highlight=False,
        soft_wrap=True,
    )
