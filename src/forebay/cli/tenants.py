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
    err,
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

    store, _ = open_tenancy(config, data_dir)
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
    store, _ = open_tenancy(config, data_dir)
    if as_json:
        print_json([asdict(t) for t in store.list_tenants()])
        return
    table = Table("id", "name", "created")
    for t in store.list_tenants():
        table.add_row(t.id, t.name, when(t.created_at))
    out.print(table)
