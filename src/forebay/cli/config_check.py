"""`forebay config check`: validate a forebay.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forebay.cli.common import load_or_exit, out, print_notices
from forebay.config.notices import served_models

config_app = typer.Typer(help="Check a forebay.yaml.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="The forebay.yaml to check.")],
) -> None:
    """Validate a config file; errors name the field and its line."""
    settings = load_or_exit(path, None)
    deployments = sum(len(m.deployments) for m in settings.models.values())
    out.print(
        f"ok: {len(settings.models)} models, {deployments} deployments, "
        f"revision {settings.revision}"
    )
    out.print(served_models(settings), highlight=False, soft_wrap=True)
    print_notices(settings)
