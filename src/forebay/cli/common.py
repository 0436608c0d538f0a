"""Options and helpers shared by every `forebay` sub-command module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from forebay.config.settings import Settings
    from forebay.tenancy.store import TenancyStore

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional here
    typer.Option(
        "--config",
        "-c",
        help="forebay.yaml; the built-in default when omitted.",
        envvar="FOREBAY_CONFIG",
    ),
]
DataDirOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--data-dir", help="Where keys and the ledger live.", envvar="FOREBAY_DATA_DIR"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def print_json(obj: object) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(config: Path | None, data_dir: Path | None) -> Settings:
    from forebay.config.load import load_settings
    from forebay.errors import ConfigError

    try:
        return load_settings(config, data_dir=data_dir)
    except ConfigError as exc:
        err.print(f"[red]config error[/red]\n{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def open_database(config: Path | None, data_dir: Path | None) -> Engine:
    """The configured database, migrated to the newest schema."""
    from forebay.db.engine import database_url, make_engine
    from forebay.db.migrate import upgrade

    settings = load_or_exit(config, data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(settings.database_url, settings.data_dir))
    upgrade(engine)
    return engine


def open_tenancy(config: Path | None, data_dir: Path | None) -> tuple[TenancyStore, Engine]:
    from forebay.tenancy.store import TenancyStore

    engine = open_database(config, data_dir)
    return TenancyStore(engine), engine


def when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
