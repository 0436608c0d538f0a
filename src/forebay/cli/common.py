"""Options and helpers shared by every `forebay` sub-command module."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column

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
        help="forebay.yaml. Else $FOREBAY_CONFIG, else the built-in default.",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--data-dir",
        help="Where keys and the ledger live. Else $FOREBAY_DATA_DIR, else the config's "
        "data_dir, else ~/.local/share/forebay.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def print_json(obj: object) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def note(message: str) -> None:
    """A remark for the person at the terminal, on stderr so --json stays clean."""
    err.print(message, highlight=False, soft_wrap=True, markup=False)


def load_or_exit(config: Path | None, data_dir: Path | None) -> Settings:
    """The settings every command uses, resolved in one order (config.locations)."""
    from forebay.config.load import load_for_command
    from forebay.errors import ConfigError

    try:
        return load_for_command(config, data_dir)
    except ConfigError as exc:
        err.print(f"[red]config error[/red]\n{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def locations(settings: Settings) -> list[str]:
    """Which config and data directory were chosen, and what chose each."""
    config = settings.source if settings.source.startswith("<") else str(Path(settings.source))
    return [
        f"config {config} ({settings.config_origin or 'given'}), revision {settings.revision}",
        f"data   {settings.data_dir} (from {settings.data_dir_origin})",
    ]


def print_settings(settings: Settings) -> None:
    """What `serve` and `config check` resolved: where from, which models, and notes."""
    from forebay.config.notices import served_models

    for line in [*locations(settings), served_models(settings)]:
        out.print(line, highlight=False, soft_wrap=True, markup=False)
    print_notices(settings)


def print_notices(settings: Settings) -> None:
    for notice in settings.notices:
        err.print(f"[yellow]note:[/yellow] {escape(notice)}", highlight=False, soft_wrap=True)


@dataclass(frozen=True, slots=True)
class Store:
    """An existing store the command acts on, and how to name it to a person."""

    settings: Settings
    engine: Engine
    where: str


def open_store(config: Path | None, data_dir: Path | None) -> Store:
    """The resolved store, migrated to the newest schema. Never creates one: a
    command that finds none says where it looked and why (only `serve` creates)."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from forebay.db.engine import database_url, make_engine
    from forebay.db.migrate import upgrade

    settings = load_or_exit(config, data_dir)
    url = database_url(settings.database_url, settings.data_dir)
    if settings.database_url:
        shown = make_url(url).render_as_string(hide_password=True)
        where = f"{shown} (database.url in {settings.source})"
    else:
        where = str(settings.data_dir / "forebay.db")
        if not (settings.data_dir / "forebay.db").is_file():
            raise fail(_no_store(settings, where))
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table("alembic_version"):
            engine.dispose()
            raise fail(_no_store(settings, where))
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        raise fail(f"cannot open {where}: {type(cause).__name__}: {cause}") from None
    return Store(settings, engine, where)


def _no_store(settings: Settings, where: str) -> str:
    from forebay.config.locations import DATA_DIR_ENV, recent_serves

    lines = [
        f"there is no Forebay store at {where}; nothing was done, nothing was created.",
        f"  looked in data dir {settings.data_dir} (from {settings.data_dir_origin})",
        f"  with config {settings.source} ({settings.config_origin or 'given'})",
    ]
    others = [
        r
        for r in recent_serves()
        if r.data_dir != settings.data_dir and (r.data_dir / "forebay.db").is_file()
    ]
    for r in others[:3]:
        state = f"running, pid {r.pid}" if r.running else "not running now"
        config = "" if r.config.startswith("<") else f" --config {r.config}"
        lines += [
            f"`forebay serve` was started with data dir {r.data_dir} (from {r.origin}; {state}).",
            f"  To use it: add{config} --data-dir {r.data_dir}, or "
            f"export {DATA_DIR_ENV}={r.data_dir}",
        ]
    lines.append("`forebay serve` creates a store on its first start.")
    return "\n".join(lines)


def open_tenancy(config: Path | None, data_dir: Path | None) -> tuple[TenancyStore, Store]:
    from forebay.tenancy.store import TenancyStore

    store = open_store(config, data_dir)
    return TenancyStore(store.engine), store


def id_column(header: str = "id") -> Column:
    """Ids are pasted into other commands (`keys revoke ID`): the other columns give
    way on a narrow terminal, an id is never cut short or wrapped."""
    return Column(header, no_wrap=True, overflow="ignore")


def when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
