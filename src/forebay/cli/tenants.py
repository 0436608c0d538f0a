"""`forebay tenants`: create and list tenants."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from forebay.cli.common import (
    ConfigOpt,
    DataDirOpt,
    JsonOpt,
    fail,
    id_column,
    note,
    open_tenancy,
    out,
    print_json,
    when,
)

tenants_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="The tenant's name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a tenant."""
    from forebay.errors import TenancyError

    store, opened = open_tenancy(config, data_dir)
    try:
        tenant = store.create_tenant(name)
    except TenancyError as exc:
        raise fail(str(exc)) from None
    out.print(f"{tenant.id}  {tenant.name}")
    note(f"in {opened.where}")


@tenants_app.command("list")
def tenants_list(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False
) -> None:
    """List tenants."""
    store, opened = open_tenancy(config, data_dir)
    tenants = store.list_tenants()
    if as_json:
        print_json([asdict(t) for t in tenants])
    elif tenants:
        table = Table(id_column(), "name", "created")
        for t in tenants:
            table.add_row(t.id, t.name, when(t.created_at))
        out.print(table)
    if not tenants:
        note(f"no tenants in {opened.where}; create one with `forebay tenants create NAME`")
